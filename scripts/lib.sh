# Shared by scripts/test and scripts/demo: configure and build kvshuttle into a build dir.
# Usage: kvs_build <build-dir> [extra cmake args...]
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${KVS_JOBS:-$(nproc)}

# ccache: paths relative to the repo so clones in other directories share hits.
export CCACHE_BASEDIR="$repo_root"
export CCACHE_NOHASHDIR=true
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}

kvs_build() {
  local dir=$1
  shift
  cmake -S "$repo_root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}
