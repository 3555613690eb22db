# Sourced by the scripts (and by a developer's shell: `. scripts/node-env.sh`): the Node.js svcplane is
# developed, tested and shipped with, the current LTS. Debian's nodejs is older; when the machine's node
# is, scripts/setup.sh installs the official binary from the npm registry's node-linux-<arch> package
# into .node/ of the checkout, and this puts it first on PATH. SVCPLANE_NODE_BIN carries the directory
# into User-mode Linux (uml-run.sh passes SVCPLANE_* in; uml-init.sh puts it first on PATH there too).
SVCPLANE_NODE_VERSION=26.12.1
svcplane_node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)/.node/bin"
if [[ -x $svcplane_node_dir/node ]]; then
  export SVCPLANE_NODE_BIN=$svcplane_node_dir
  case ":$PATH:" in
    *":$svcplane_node_dir:"*) ;;
    *) export PATH="$svcplane_node_dir:$PATH" ;;
  esac
fi
unset svcplane_node_dir
