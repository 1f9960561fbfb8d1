# Helpers shared by the zk0 server and client modules (not a module itself).
{ lib }:
let
  settingValue =
    v:
    if builtins.isBool v then
      (if v then "true" else "false")
    else if builtins.isFloat v then
      builtins.toJSON v
    else
      toString v;
in
{
  settingsType = lib.types.attrsOf (
    lib.types.oneOf [
      lib.types.str
      lib.types.int
      lib.types.float
      lib.types.bool
    ]
  );

  # { local-steps = 200; } -> [ "--set" "local-steps=200" ], in attribute-name order.
  settingsArgs =
    settings:
    builtins.concatMap (name: [
      "--set"
      "${name}=${settingValue settings.${name}}"
    ]) (builtins.attrNames settings);

  # Sandboxing for a process that runs torch. Exceptions to the strictest setting, and why:
  # - MemoryDenyWriteExecute is not set: torch's JIT/inductor, triton and CUDA's PTX JIT
  #   map memory writable and executable.
  # - ProcSubset stays "all": torch, psutil and the data loaders read /proc/cpuinfo, /proc/meminfo
  #   and /proc/sys; ProtectProc = "invisible" still hides other users' processes.
  # - SystemCallFilter keeps @resources: torch's OpenMP and data loader workers set CPU affinity
  #   and priorities.
  # - AF_NETLINK is allowed: glibc's getaddrinfo(AI_ADDRCONFIG), used by gRPC, enumerates
  #   interfaces over netlink.
  # - PrivateDevices is set per service: the client turns it off to reach GPUs (DevicePolicy
  #   and DeviceAllow then limit it to the NVIDIA devices).
  hardening = {
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    NoNewPrivileges = true;
    PrivateTmp = true;
    PrivateMounts = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectControlGroups = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    ProcSubset = "all";
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
      "AF_NETLINK"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    UMask = "0077";
  };
}
