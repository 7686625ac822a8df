#!/usr/bin/env bash
# make image BOARD=<name>: what the board's U-Boot needs, in build/image/<name>/:
#   Image       the kernel (arm64 Image, runs at any 2 MiB-aligned address)
#   board.dtb   the board's DTB from Debian's arm64 kernel package (unless the board
#               firmware provides one, as QEMU does)
#   boot.scr    U-Boot script (mkimage) that loads both and runs booti
#   sd.img      a disk with one FAT partition holding the three, ready to write to an
#               SD card / USB stick (dd) or to give QEMU as a drive
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
cd "$(dirname "$0")/.."
board=${1:?usage: boards/image.sh <board>}
conf=boards/$board/board.conf
[ -f "$conf" ] || { echo "no board profile $conf (see boards/)"; exit 2; }
# shellcheck disable=SC1090
. "$conf"
out=build/image/$board
mkdir -p "$out"
cp "${KERNEL:-build/kernel.bin}" "$out/Image"

fdt_line='booti ${kernel_addr_r} - ${fdtcontroladdr}'
if [ -n "${DTB:-}" ]; then
    name=$(basename "$DTB")
    if [ -f "tests/dt/boards/$name" ]; then
        cp "tests/dt/boards/$name" "$out/board.dtb"
    else
        # Fetch Debian's arm64 kernel package once and take the DTB from it.
        cache=build/debian-dtbs
        if [ ! -f "$cache/$DTB" ]; then
            mkdir -p "$cache"
            dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
            apt-get update -qq
            pkg=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: \(linux-image-[^ ]*\):arm64/\1/p' | head -1)
            (cd "$cache" && apt-get download -qq "$pkg:arm64" && dpkg-deb -x ./*.deb x && cp -r x/usr/lib/linux-image-*/* . && rm -rf x ./*.deb)
        fi
        [ -f "$cache/$DTB" ] || { echo "$DTB is not in Debian's kernel package"; exit 2; }
        cp "$cache/$DTB" "$out/board.dtb"
    fi
    fdt_line='load ${devtype} ${devnum}:${distro_bootpart} ${fdt_addr_r} board.dtb
booti ${kernel_addr_r} - ${fdt_addr_r}'
fi

cat > "$out/boot.cmd" <<CMD
# smmuv3-kernel for $board (made by boards/image.sh)
echo "smmuv3-kernel: loading Image"
setenv bootargs "${BOOTARGS:-}"
load \${devtype} \${devnum}:\${distro_bootpart} \${kernel_addr_r} Image
$fdt_line
CMD
mkimage -q -A arm64 -O linux -T script -C none -n "smmuv3-kernel $board" -d "$out/boot.cmd" "$out/boot.scr"

# A 16 MiB disk: MBR, one FAT16 partition from 1 MiB, holding the files.
img=$out/sd.img
rm -f "$img"
truncate -s 16M "$img"
echo 'start=2048, type=0e, bootable' | sfdisk -q "$img"
mformat -i "$img@@1M" -F -v SMMUV3 :: 2>/dev/null || mformat -i "$img@@1M" -v SMMUV3 ::
for f in Image boot.scr board.dtb; do
    [ -f "$out/$f" ] && mcopy -i "$img@@1M" "$out/$f" ::/
done
echo "image for $board in $out: $(cd "$out" && ls | tr '\n' ' ')"
