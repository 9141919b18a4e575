"""Memory: what the machine has free, and what a network needs for inference.

Inference (UNet of the diffusion models): activation bytes per network input per pixel per base
channel. The encoder's skips (~6 x base full-resolution maps) plus the decoder's widest transients
(concat, fp32 GroupNorm copy, activation, output: ~12 x base), times 4 bytes, are ~80 by count;
bench/memory.py measured 93-114 in fp32 on a CPU (peak RSS growth per input, widths 16 and 128,
several runs), so 120. bf16 on a GPU needs less; not measured on a GPU yet.
"""

from __future__ import annotations

INFERENCE_BYTES_PER_PIXEL_CHANNEL = 120
GIB = 1 << 30


def available_memory() -> int:
    """Bytes of RAM the system can hand out now (MemAvailable; 4 GiB when it cannot be read)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def unet_inference_bytes(height: int, width: int, base_channels: int) -> int:
    """Peak activation bytes of one UNet input at inference (see the module doc)."""
    return INFERENCE_BYTES_PER_PIXEL_CHANNEL * height * width * base_channels
