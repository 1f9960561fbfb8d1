# The zk0 application: a virtual environment with zk0 and every runtime dependency from uv.lock
# (bin/zk0bot, Flower's flower-superlink/flower-supernode/flwr..., python).
{
  lib,
  workspace,
  pythonSet,
  name,
}:
lib.addMetaAttrs {
  description = "Federated SmolVLA training for SO-100/SO-101 robot datasets with Flower";
  mainProgram = "zk0bot";
  license = lib.licenses.asl20;
  platforms = lib.platforms.linux;
} (pythonSet.mkVirtualEnv "${name}-${pythonSet.zk0.version}" workspace.deps.default)
