import { parentPort } from 'node:worker_threads';
import { failureText, readRegularSync, type ReadOutcome, type ReadRequest } from './manifest-files.js';

/**
 * The manifest reader thread (manifest-files.ts readManyOnThread): each message a batch of files,
 * read with synchronous calls (a read that hangs holds this thread, never the event loop), answered
 * with their outcomes in order. Texts only: parsing stays on the main thread, where the objects are
 * kept (sending objects back by structured clone cost what the thread saved).
 */
interface Batch {
  readonly requests: readonly ReadRequest[];
  readonly maxBytes: number;
}

const readOne = (req: ReadRequest, maxBytes: number): ReadOutcome => {
  try {
    return readRegularSync(req.path, maxBytes, req.listedRegular);
  } catch (err) {
    return { failed: failureText(err) };
  }
};

parentPort?.on('message', (batch: Batch) => {
  parentPort?.postMessage(batch.requests.map((req) => readOne(req, batch.maxBytes)));
});
