# Sourced (not run) by the device scripts (study_gpu.sh, hopper_gpu_check.sh, hopper_ab.sh), from the
# repository root on the GPU machine: the carried wheels (.whl/, scripts/make_carry.sh) installed into
# /tmp/site once per machine, PYTHONPATH, and SPATTERN_SOURCE_REVISION from .carry/source_rev
# (scripts/stamp_source.sh), so that env.json names the commit the copy came from.
if [ -d .whl ] && [ ! -d /tmp/site ]; then pip install -q --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2; fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ -f .carry/source_rev ]; then export SPATTERN_SOURCE_REVISION="${SPATTERN_SOURCE_REVISION:-$(cat .carry/source_rev)}"; fi
