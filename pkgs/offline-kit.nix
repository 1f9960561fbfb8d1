# The offline kit (a tiny SmolVLM-style backbone and two synthetic SO-100 datasets), built by
# zk0.offline.build_kit: what `zk0bot demo` and the VM test train on, with no network.
{ pkgs, zk0 }:
pkgs.runCommand "zk0-offline-kit" { } ''
  export HOME=$TMPDIR HF_HUB_OFFLINE=1
  ${zk0}/bin/python -c 'import os, pathlib; from zk0.offline import build_kit; build_kit(pathlib.Path(os.environ["out"]))'
''
