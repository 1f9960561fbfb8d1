# Overrides for the binary wheels in uv.lock that autoPatchelf cannot resolve on its own.
#
# uv2nix builds every wheel as its own derivation and runs autoPatchelfHook on it with the
# manylinux2014 libraries (libstdc++, libgcc_s, zlib, ...) as buildInputs. What is left is what
# wheels find next to each other in a pip-installed site-packages. The lists below come from
# `readelf -d` on the wheels locked in uv.lock (torch 2.11, the CUDA 13 `nvidia-*` wheels,
# torchvision 0.26, torchcodec 0.11) on x86_64-linux; see docs/NIX.md.
#
# `cuda`: also add the NixOS driver runpath (/run/opengl-driver/lib) to every CUDA library so
# that libcuda.so.1, which torch and the CUDA runtime dlopen, is found on NixOS hosts.
{
  lib,
  pkgs,
  cuda ? false,
}:
final: prev:
let
  sitePackages = final.python.sitePackages;

  # The NVIDIA user-space driver belongs to the host (/run/opengl-driver/lib on NixOS, mounted
  # by the container runtime elsewhere) and must never be pinned to a store path.
  driverLibs = [
    "libcuda.so.1"
    "libnvidia-ml.so.1"
  ];

  # The CUDA wheels in link order: each may link against the ones before it
  # (cusolver -> cublas, cusparse, nvJitLink; cusparse -> nvJitLink), never after,
  # so the search paths below form no cycle.
  cudaWheels = builtins.filter (name: prev ? ${name}) [
    "nvidia-cuda-runtime"
    "nvidia-cuda-nvrtc"
    "nvidia-nvjitlink"
    "nvidia-cublas"
    "nvidia-cufft"
    "nvidia-curand"
    "nvidia-cusparse"
    "nvidia-cusolver"
    "nvidia-cusparselt-cu13"
    "nvidia-cudnn-cu13"
    "nvidia-nccl-cu13"
    "nvidia-nvshmem-cu13"
    "nvidia-cufile"
    "nvidia-cuda-cupti"
    "nvidia-nvtx"
  ];

  before =
    name:
    let
      go = names: if names == [ ] || builtins.head names == name then [ ] else [ (builtins.head names) ] ++ go (builtins.tail names);
    in
    go cudaWheels;

  # Let autoPatchelf look inside other wheels' site-packages (recursively) for libraries.
  searchIn =
    drvs:
    lib.concatMapStrings (drv: ''
      addAutoPatchelfSearchPath "${drv}/${sitePackages}"
    '') drvs;

  withCuda =
    {
      deps ? [ ],
      ignore ? [ ],
      buildInputs ? [ ],
    }:
    old: {
      nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ lib.optional cuda pkgs.autoAddDriverRunpath;
      buildInputs = (old.buildInputs or [ ]) ++ buildInputs;
      autoPatchelfIgnoreMissingDeps = (old.autoPatchelfIgnoreMissingDeps or [ ]) ++ driverLibs ++ ignore;
      preFixup = (old.preFixup or "") + searchIn deps;
    };

  cudaWheelFixes = lib.genAttrs cudaWheels (
    name:
    prev.${name}.overrideAttrs (
      withCuda (
        {
          deps = map (n: final.${n}) (before name);
        }
        // lib.optionalAttrs (name == "nvidia-cufile") {
          # libcufile_rdma links the RDMA user-space libraries.
          buildInputs = [ pkgs.rdma-core ];
        }
        // lib.optionalAttrs (name == "nvidia-nvshmem-cu13") {
          # Optional bootstrap/transport plugins, dlopened only when selected for multi-node
          # runs (MPI, PMIx, OpenSHMEM, UCX, libfabric, InfiniBand); zk0 uses none of them.
          ignore = [
            "libmpi.so.40"
            "liboshmem.so.40"
            "libpmix.so.2"
            "libucs.so.0"
            "libucp.so.0"
            "libfabric.so.1"
            "libmlx5.so.1"
          ];
        }
      )
    )
  );

  ffmpegLibs = [
    "libavutil.so.*"
    "libavcodec.so.*"
    "libavformat.so.*"
    "libavdevice.so.*"
    "libavfilter.so.*"
    "libswscale.so.*"
    "libswresample.so.*"
  ];
in
# Everything but docopt concerns ELF libraries: Linux only.
lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux (
cudaWheelFixes
// lib.optionalAttrs (prev ? torch) {
  # libtorch_cuda/libtorch_cpu link cudart, cublas, cudnn, nccl, cusparseLt, nvshmem, cufile, cupti...
  torch = prev.torch.overrideAttrs (withCuda {
    deps = map (n: final.${n}) cudaWheels;
  });
}
// lib.optionalAttrs (prev ? torchvision) {
  # torchvision's extensions link libtorch*, libc10* from the torch wheel.
  torchvision = prev.torchvision.overrideAttrs (withCuda {
    deps = [ final.torch ] ++ map (n: final.${n}) cudaWheels;
  });
}
// lib.optionalAttrs (prev ? torchcodec) {
  # torchcodec ships one core library per FFmpeg major (4 to 8) and loads the first that
  # resolves: link the nixpkgs FFmpeg, ignore the other majors. It also links libpython.
  torchcodec = prev.torchcodec.overrideAttrs (withCuda {
    deps = [ final.torch ] ++ map (n: final.${n}) cudaWheels;
    buildInputs = [
      (lib.getLib pkgs.ffmpeg)
      final.python
    ];
    ignore = ffmpegLibs;
  });
}
// lib.optionalAttrs (prev ? triton) {
  # triton dlopens libcuda; with `cuda` it gets the driver runpath like the CUDA wheels.
  triton = prev.triton.overrideAttrs (withCuda { });
}
// lib.optionalAttrs (prev ? cuda-bindings) {
  cuda-bindings = prev.cuda-bindings.overrideAttrs (withCuda { });
}
)
// lib.optionalAttrs (prev ? docopt) {
  # docopt (via num2words) is an sdist with a setup.py and no declared build system.
  docopt = prev.docopt.overrideAttrs (old: {
    nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ final.resolveBuildSystem { setuptools = [ ]; };
  });
}
