# The Python package set: every package from uv.lock (through uv2nix), the build systems from
# pyproject-build-systems, and the overrides binary wheels need (./overrides.nix).
{
  pkgs,
  lib,
  python,
  workspace,
  pyproject-nix,
  pyproject-build-systems,
  cuda ? false,
}:
let
  # Prefer wheels: torch, the CUDA libraries and most of the lock ship only wheels anyway.
  lockOverlay = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };
  baseSet = pkgs.callPackage pyproject-nix.build.packages { inherit python; };
in
baseSet.overrideScope (
  lib.composeManyExtensions [
    pyproject-build-systems.overlays.default
    lockOverlay
    (import ./overrides.nix { inherit lib pkgs cuda; })
  ]
)
