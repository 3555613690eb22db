import assert from 'node:assert/strict';
import { AddressWatch, subscribedSockets } from '../../../src/kernel/address-watch.js';
import { parseAddressShow } from '../../../src/kernel/netif.js';

describe('address watch (kernel/address-watch.ts)', () => {
  it('finds the NETLINK_ROUTE sockets that joined a multicast group in /proc/net/netlink', () => {
    const text = [
      'sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode',
      '0000000073eee78c 0   0          00000000 0        0        0     2        0        4       ',
      '00000000e17289fd 0   2583368450 00000110 0        0        0     2        0        9161174 ',
      '00000000e17289fe 0   2583368451 00000000 0        0        0     2        0        9161175 ',
      '00000000e17289ff 9   0          00000001 0        0        0     2        0        9161176 ',
      '',
    ].join('\n');
    assert.deepEqual(subscribedSockets(text), ['9161174']);
  });

  it('without watch() (one-shot commands) every call reads', async () => {
    let n = 0;
    const w = new AddressWatch({ read: () => Promise.resolve((n++, { addresses: [], links: [] })) });
    await w.addresses();
    await w.addresses();
    assert.equal(n, 2);
    assert.equal(w.reads, 2);
    assert.equal(w.fresh, false);
  });

  it('one `ip -j address show` gives the addresses and every link, with or without an address', () => {
    const show = parseAddressShow(
      JSON.stringify([
        {
          ifindex: 1,
          ifname: 'lo',
          flags: ['LOOPBACK', 'UP'],
          addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }],
        },
        { ifindex: 5, ifname: 'kube-ipvs0', flags: ['BROADCAST', 'NOARP'], addr_info: [] },
      ]),
    );
    assert.deepEqual(show.links, ['lo', 'kube-ipvs0']);
    assert.deepEqual(
      show.addresses.map((a) => `${a.ifname} ${a.ip}/${a.prefixLen}`),
      ['lo 127.0.0.1/8'],
    );
  });
});
