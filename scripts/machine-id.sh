#!/usr/bin/env bash
# Prints this machine's CPU identity as one file-name-safe word, the same as modelbench's
# `CpuIdentity::key` (crates/measure/src/measure/hardware.rs; tests/machine_identity.rs checks they agree):
#   vendor-family-model-stepping-<features>-l1d<KiB>k-l2-<KiB>k-l3-<KiB>k
# e.g. intel-6-167-1-avx2-avx512f-vnni-amx-l1d48k-l2-2048k-l3-491520k, where the features are
# those of avx2, avx512f, vnni (avx512_vnni), amx (amx_tile) the CPU has. `.ci/run` keys its
# cache of llama.cpp builds (built with -march=native) by it.
set -euo pipefail
field() { awk -F': *' -v k="$1" '$0 == "" { exit } { sub(/[ \t]+$/, "", $1) } $1 == k { print $2; exit }' /proc/cpuinfo 2>/dev/null || true; }
vendor=$(field vendor_id)
case $vendor in
  GenuineIntel) vendor=intel ;;
  AuthenticAMD) vendor=amd ;;
  "") vendor=$(uname -m | tr -cd '[:alnum:]' | tr '[:upper:]' '[:lower:]') ;;
  *) vendor=$(printf '%s' "$vendor" | tr -cd '[:alnum:]' | tr '[:upper:]' '[:lower:]') ;;
esac
num() { local v; v=$(field "$1"); [[ $v =~ ^[0-9]+$ ]] && echo "$v" || echo 0; }
flags=" $(field flags) "
key="$vendor-$(num 'cpu family')-$(num model)-$(num stepping)"
for f in avx2:avx2 avx512f:avx512f vnni:avx512_vnni amx:amx_tile; do
  case $flags in *" ${f#*:} "*) key="$key-${f%%:*}" ;; esac
done
l1d=0 l2=0 l3=0
for d in /sys/devices/system/cpu/cpu0/cache/index*; do
  [ -r "$d/size" ] || continue
  size=$(cat "$d/size") level=$(cat "$d/level") type=$(cat "$d/type")
  case $size in *K) kib=${size%K} ;; *M) kib=$(( ${size%M} * 1024 )) ;; *) kib=0 ;; esac
  case $level/$type in 1/Data) l1d=$kib ;; 2/Unified) l2=$kib ;; 3/Unified) l3=$kib ;; esac
done
echo "$key-l1d${l1d}k-l2-${l2}k-l3-${l3}k"
