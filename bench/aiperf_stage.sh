#!/usr/bin/env bash
# Stage NVIDIA's aiperf for the GPU machine (issue 14), which reaches no package index: runs HERE,
# with PyPI access, and writes git-ignored folders .gpuD1, .gpuD2, ... (each <= 55 MiB, so one
# fits beside others in a 64 MiB carry) holding wheels for CPython 3.12 on manylinux x86-64, a
# SHA256SUMS and an install.sh. On the machine, `bash .gpuDn/install.sh` (one call per folder,
# each carrying its folder) installs them into ${AIPERF_SITE:-/tmp/site3}; then
# `python3 -m bench.aiperf_run --aiperf-site /tmp/site3 ...` drives the sweep.
#
# Only what `aiperf profile` (chat endpoint, streaming, synthetic prompts, JSON export) imports
# and the GPU image lacks: aiperf 0.13.0 declares ~50 dependencies (dash, kaleido, optuna,
# datasets, kopf, kubernetes, textual, ...) but imports them lazily. The list below was found by
# tracing every import of every aiperf process in such a run, then leaving each wheel out in
# turn: each one here is needed (docstring-parser only for `aiperf profile --help`). The rest
# comes from the image, at its versions (numpy, pydantic, aiohttp, transformers, tokenizers,
# huggingface_hub, rich 15, psutil, aiofiles, uvloop, ...), which aiperf's pins (rich~=14.1,
# psutil~=7.0, aiofiles~=24.1) exclude but which work: hence --no-deps.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
limit=$((55 * 1024 * 1024))
wheels=(
  aiperf==0.13.0
  crick==0.0.8            # streaming percentiles (records processor)
  cyclopts==4.25.3        # the command line
  docstring-parser==0.18.0  # cyclopts' --help
  ffmpeg-python==0.2.0    # imported by the synthetic dataset composer
  future==1.0.0           # ffmpeg-python's import of `past`
  msgspec==0.23.0
  orjson==3.11.9
  pydantic-settings==2.16.3
  python-dotenv==1.2.4    # pydantic-settings
  pyzmq==26.4.0           # aiperf's processes talk over ZMQ
  ruamel.yaml==0.18.17    # config loading (its C extension is optional: left out)
)
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$tmp" "${wheels[@]}"
count=$(find "$tmp" -name '*.whl' | wc -l)
[ "$count" -eq "${#wheels[@]}" ] || { echo "expected ${#wheels[@]} wheels, got $count" >&2; exit 1; }

rm -rf "$repo"/.gpuD[0-9]*
n=1 used=0
mkdir "$repo/.gpuD1"
# Largest first, each into the current folder while it stays under the limit.
while read -r size path; do
  if [ $((used + size)) -gt "$limit" ] && [ "$used" -gt 0 ]; then
    n=$((n + 1)) used=0
    mkdir "$repo/.gpuD$n"
  fi
  mv "$path" "$repo/.gpuD$n/"
  used=$((used + size))
done < <(find "$tmp" -name '*.whl' -printf '%s %p\n' | sort -rn)

for dir in "$repo"/.gpuD[0-9]*; do
  (cd "$dir" && sha256sum ./*.whl > SHA256SUMS)
  # Every folder knows the whole set, so the last one installed can check it is complete.
  (cd "$repo" && ls .gpuD[0-9]*/*.whl | xargs -n1 basename) > "$dir/ALL_WHEELS"
  cat > "$dir/install.sh" <<'EOF'
#!/usr/bin/env bash
# Runs ON the GPU machine (no package index): installs this folder's aiperf wheels into
# ${AIPERF_SITE:-/tmp/site3} (kept in /tmp while the machine stays warm) and, once every
# staged folder has been installed, checks that aiperf imports. Written by bench/aiperf_stage.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
site=${AIPERF_SITE:-/tmp/site3}
python=${PYTHON:-python3}
(cd "$here" && sha256sum -c --quiet SHA256SUMS)
"$python" -m pip install -q --no-index --no-deps --upgrade --target "$site" "$here"/*.whl
name=$(basename "$here")
mkdir -p "$site/.staged" && cp "$here/SHA256SUMS" "$site/.staged/${name#.}"
missing=0
while read -r wheel; do
  grep -q " ./$wheel\$" "$site"/.staged/* 2>/dev/null || { echo "not yet installed: $wheel"; missing=1; }
done < "$here/ALL_WHEELS"
if [ "$missing" = 1 ]; then echo "installed $name; now install the other folder(s)"; exit 0; fi
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
  "import aiperf.cli, zmq, crick, msgspec, orjson, ffmpeg, ruamel.yaml, pydantic_settings; \
from importlib.metadata import version; print('aiperf', version('aiperf'), 'in $site')"
EOF
  chmod +x "$dir/install.sh"
done
du -sh "$repo"/.gpuD[0-9]*
