# svcplane container image: Node + the app + iptables (nft and legacy), nft (Debian 12's 1.0.6, and
# Debian 13's 1.1.3 in /opt/svcplane-nft), ipset, ipvsadm, conntrack, iproute2. Runs with a read-only root filesystem: the entrypoint picks the iptables backend and passes
# it as --iptables-binary (nothing is rewritten); svcplane writes only under /tmp (mount a tmpfs). Needs BuildKit (DOCKER_BUILDKIT=1; Debian's docker.io client has it built in) because the
# app stage is picked by a build argument and only that stage is built.
#
#   docker build -t svcplane .                         # public bases, app built from source (npm ci)
#   docker build -t svcplane --build-arg PREBUILT=1 \
#     --build-arg BUILD_BASE=svcplane-node:bookworm --build-arg RUNTIME_BASE=svcplane-node:bookworm .
#                                                      # offline: local bases (scripts/docker-setup.sh),
#                                                      # app built on the host (npm ci && npm run build)
#
# Why PREBUILT=1 on machines without a container registry: there the engine runs without a bridge or
# NAT (it must not touch the host's firewall), so RUN steps have no network, and npm would also need
# the host's CA bundle. Copying the host-built dist and pruning node_modules offline takes seconds and
# gives the same files `npm ci && npm run build && npm prune --omit=dev` gives.
# Build secrets (optional, source build): --secret id=npm_ca,src=/etc/ssl/certs/ca-certificates.crt
# and, for the runtime packages on a base without them, --secret id=apt_sources,src=<a deb822 .sources>.

ARG BUILD_BASE=node:26-bookworm-slim
ARG RUNTIME_BASE=node:26-bookworm-slim
ARG PREBUILT=0

# --- app from source ----------------------------------------------------------------------------
FROM ${BUILD_BASE} AS app-prebuilt-0
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=npm_ca \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi; \
    npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund --loglevel=error \
    && find dist -name '*.map' -delete

# --- app built on the host (copied from the context; dev dependencies pruned offline) -------------
FROM ${BUILD_BASE} AS app-prebuilt-1
WORKDIR /app
COPY package.json package-lock.json ./
COPY node_modules ./node_modules
# Pruned before the app is copied so a code change reuses this (slowest, ~10 s) layer.
RUN npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error
COPY bin ./bin
COPY dist/src ./dist/src
RUN test -f dist/src/cli/main.js || { echo "PREBUILT=1: run 'npm run build' first" >&2; exit 1; }

FROM app-prebuilt-${PREBUILT} AS app

# --- Debian 13's nft 1.1.3 (scripts/nft-install.sh), for --nft-binary=/opt/svcplane-nft/bin/nft ------
# Its own libraries and loader under /opt/svcplane-nft (7 MB); the image's `nft` (Debian 12's 1.0.6,
# kube-proxy's choice: whatever nft the image has) stays the default: see docs/modes.md "Which nft".
FROM ${BUILD_BASE} AS nft-prebuilt-0
COPY scripts/nft-install.sh /src/scripts/nft-install.sh
RUN bash /src/scripts/nft-install.sh /opt/svcplane-nft

# Offline: the host's .nft/ (scripts/setup.sh ran scripts/nft-install.sh there).
FROM ${BUILD_BASE} AS nft-prebuilt-1
COPY .nft /opt/svcplane-nft
RUN /opt/svcplane-nft/bin/nft --version | grep -q 'v1\.1\.' \
    || { echo "PREBUILT=1: run 'bash scripts/nft-install.sh' first" >&2; exit 1; }

FROM nft-prebuilt-${PREBUILT} AS nft

# --- runtime ------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE}
# The apt step runs only when the base lacks a tool (the local svcplane-node base has them all).
RUN --mount=type=secret,id=apt_sources,target=/run/apt-sources/build.sources \
    set -e; need=; \
    for c in iptables-nft iptables-legacy nft ipset ipvsadm conntrack ip modprobe setpriv; do \
      command -v "$c" >/dev/null 2>&1 || need="$need $c"; \
    done; \
    if [ -n "$need" ]; then \
      echo "installing runtime packages (missing:$need)"; \
      src=; if [ -s /run/apt-sources/build.sources ]; then \
        src="-o Dir::Etc::SourceParts=/run/apt-sources -o Dir::Etc::SourceList=/dev/null"; fi; \
      export DEBIAN_FRONTEND=noninteractive; \
      apt-get $src update -qq; \
      apt-get $src install -y -qq --no-install-recommends \
        iptables nftables ipset ipvsadm conntrack iproute2 kmod util-linux ca-certificates >/dev/null; \
      rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi
ENV NODE_ENV=production
WORKDIR /app
COPY --from=app /app/package.json ./
COPY --from=app /app/node_modules ./node_modules
COPY --from=app /app/bin ./bin
COPY --from=app /app/dist/src ./dist/src
COPY --from=nft /opt/svcplane-nft /opt/svcplane-nft
COPY deploy/image/svcplane-entrypoint.sh /usr/local/bin/svcplane
# kube-proxy's DaemonSet runs /usr/local/bin/kube-proxy: with this image it runs svcplane.
COPY deploy/image/svcplane-entrypoint.sh /usr/local/bin/kube-proxy
ENTRYPOINT ["svcplane"]
# kube-proxy's form (svcplane [flags] is kube-proxy [flags]), with its DaemonSet's configuration file.
CMD ["--config=/var/lib/kube-proxy/config.conf"]
