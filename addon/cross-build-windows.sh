#!/usr/bin/env bash
# Cross-builds the addon for Windows x64 with mingw-w64 (posix threads) into
# addon/build-win32/bmrt.node: the check, from Linux, that the C++ core and the binding build for
# Windows and load in node.exe (npm run test:windows). Windows users build with MSVC through
# node-gyp (npm install); this build is only for that check. Needs g++-mingw-w64-x86-64.
set -euo pipefail
cd "$(dirname "$0")"
out=build-win32
mkdir -p "$out/obj"
node_api=$(node -p "require('node-api-headers').include_dir")
addon_api=$(node -p "require('node-addon-api').include_dir")
def=$(node -p "require('node-api-headers').def_paths.node_api_def")
# node.exe exports the N-API functions; this import library lets the linker resolve them.
x86_64-w64-mingw32-dlltool -d "$def" -l "$out/node.lib" -D node.exe
flags=(-std=c++17 -O3 -I"$node_api" -I"$addon_api" -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED
       -DBUILDING_NODE_EXTENSION -DNOMINMAX -D_USE_MATH_DEFINES -Wall -Wno-uninitialized -Wno-maybe-uninitialized)
sources=(src/binding.cc src/core/*.cc)
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -I{} sh -c \
  'x86_64-w64-mingw32-g++-posix "$@" -c {} -o "'"$out"'/obj/$(basename {} .cc).o"' _ "${flags[@]}"
x86_64-w64-mingw32-g++-posix -shared -o "$out/bmrt.node" "$out"/obj/*.o "$out/node.lib" \
  -static -static-libgcc -static-libstdc++ -Wl,--no-undefined
echo "built addon/$out/bmrt.node ($(du -k "$out/bmrt.node" | cut -f1) KiB)"
