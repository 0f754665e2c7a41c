#!/usr/bin/env bash
# Build and install the mindglm AscendC custom-op package (needs the CANN toolkit: msopgen, ASCEND_HOME_PATH).
#   SOC=ai_core-Ascend910B1 INSTALL=/opt/mindglm_ops bash kernels/ascendc/build.sh
# then export the ASCEND_CUSTOM_OPP_PATH line it prints; mindglm_image.ops.ascendc.installed() sees it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/build}
install=${INSTALL:-$here/install}
soc=${SOC:-ai_core-Ascend910B1}
command -v msopgen >/dev/null || { echo "msopgen not found: source \$ASCEND_HOME_PATH/set_env.sh (CANN toolkit)" >&2; exit 1; }
for op in ada_layer_norm adamw_ema; do
  rm -rf "$out/$op"
  msopgen gen -i "$here/$op/$op.json" -c "$soc" -lan cpp -out "$out/$op"
  cp "$here/$op/op_host/"* "$out/$op/op_host/"
  cp "$here/$op/op_kernel/"* "$out/$op/op_kernel/"
  sed -i 's/"value": "customize"/"value": "mindglm"/' "$out/$op/CMakePresets.json"  # vendor name
  (cd "$out/$op" && bash build.sh)
  "$out/$op"/build_out/custom_opp_*.run --install-path="$install"
done
echo "export ASCEND_CUSTOM_OPP_PATH=$install/vendors/mindglm:\${ASCEND_CUSTOM_OPP_PATH:-}"
