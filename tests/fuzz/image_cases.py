"""Image fuzz cases: a seed image, its mutations and the load options, from (seed, index).

Case N of seed S depends on (S, N) only, so a failure replays alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from pyvmm.arch.x86_64 import layout
from pyvmm.loaders.entry import CpuMode
from tests.fuzz.image_formats import fix_multiboot_checksum
from tests.fuzz.image_mutations import MUTATIONS
from tests.fuzz.image_seeds import FAMILIES, GIB, MIB, SeedImage, seed_corpus

# Guest RAM per case: layout.ram_ranges of a few small sizes, plus a split one
# (2 MiB low, 2 MiB at 4 GiB) that stands for "-m 4G and more" at no host cost.
RAM_CONFIGS: dict[str, list[tuple[int, int]]] = {
    "2M": layout.ram_ranges(2 * MIB),
    "256M": layout.ram_ranges(256 * MIB),  # where a real kernel fits
    "3M": layout.ram_ranges(3 * MIB),
    "8M": layout.ram_ranges(8 * MIB),
    "64M": layout.ram_ranges(64 * MIB),
    "2M+2M@4G": [(0, 2 * MIB), (4 * GIB, 2 * MIB)],
}

CMDLINES = ["kernel", "", "kernel console=ttyS0", "k" * 5000, "k\udcffpath", "nul\0inside",
            "new\nline", "kernel \u00e9\u4e2d"]  # fmt: skip
MODULE_SIZES = [0, 10, 4096, 300_000, 3 * MIB]


@dataclass(frozen=True)
class Case:
    """Everything one load needs; built from (seed, index) alone."""

    seed: int
    index: int
    source: SeedImage
    image: bytes
    mutations: tuple[str, ...]
    ram: str
    mode: CpuMode | None
    force_multiboot: bool
    image_format: str | None  # --format (the linux family only; None: by the contents)
    load_gpa: int | None
    cmdline: str
    modules: tuple[tuple[str, bytes], ...]
    via_file: bool  # read back with read_image from a file, as `pyvmm boot` does

    @property
    def append(self) -> str | None:
        """--append: a Linux kernel's whole command line (multiboot's comes with `cmdline`)."""
        return self.cmdline if self.source.family == "linux" else None

    def describe(self) -> str:
        mode = self.mode.value if self.mode else "auto"
        gpa = "default" if self.load_gpa is None else f"0x{self.load_gpa:x}"
        modules = ", ".join(f"{s!r}:{len(d)}B" for s, d in self.modules) or "none"
        return (
            f"image {self.source.name} -> {len(self.image)} bytes after "
            f"[{'; '.join(self.mutations) or 'no mutation'}]; ram {self.ram}, mode {mode}, "
            f"multiboot {'forced' if self.force_multiboot else 'auto'}, "
            f"format {self.image_format or 'auto'}, load address {gpa}, "
            f"cmdline {self.cmdline[:40]!r}, modules {modules}"
            + (", read from a file" if self.via_file else "")
        )


def make_case(seed: int, index: int, corpus: Sequence[SeedImage] | None = None) -> Case:
    """Case `index` of campaign `seed`; `corpus` replaces the seed corpus (e.g. real kernels)."""
    rng = random.Random(f"image-fuzz:{seed}:{index}")
    if corpus:
        source = rng.choice(list(corpus))
    else:
        family = rng.choice(FAMILIES)
        # Now and then only well-formed seeds: mutated, they reach deeper than a defect does.
        only_sound = rng.random() < 0.4
        seeds = [s for s in seed_corpus() if s.family == family and (s.sound or not only_sound)]
        source = rng.choice(seeds)
    ram = rng.choice(list(RAM_CONFIGS))
    ram_size = sum(size for _, size in RAM_CONFIGS[ram])
    image = bytearray(source.data)
    count = rng.choices([0, 1, 2, 3, 4], weights=[2, 4, 2, 1, 1])[0]
    functions, weights = zip(*MUTATIONS, strict=True)
    mutations = [fn(rng, image, ram_size) for fn in rng.choices(functions, weights, k=count)]
    if (
        source.family == "multiboot"
        and count
        and rng.random() < 0.5
        and fix_multiboot_checksum(image)
    ):
        mutations.append("multiboot checksum fixed")
    is_flat = source.family == "flat"
    modules: tuple[tuple[str, bytes], ...] = ()
    modules_chance = {"multiboot": 0.25, "linux": 0.3}.get(source.family, 0.02)
    if rng.random() < modules_chance:
        modules = tuple(
            (rng.choice(["mod", "", "m\udcff", "m\0"]), bytes(rng.choice(MODULE_SIZES)))
            for _ in range(rng.randint(1, 2))
        )
    return Case(
        seed=seed,
        index=index,
        source=source,
        image=bytes(image),
        mutations=tuple(mutations),
        ram=ram,
        mode=_choose_mode(rng, source.family),
        force_multiboot=rng.random() < (0.4 if source.family == "multiboot" else 0.1),
        image_format=_choose_format(rng) if source.family == "linux" else None,
        load_gpa=_choose_load_gpa(rng, ram_size, len(image)) if is_flat or rng.random() < 0.05
        else None,
        cmdline=CMDLINES[0] if rng.random() < 0.85 else rng.choice(CMDLINES),
        modules=modules,
        via_file=rng.random() < 0.15,
    )  # fmt: skip


# The modes each family can start in; others are tried now and then, and must be refused.
NATURAL_MODES = {
    "flat": list(CpuMode),
    "elf32": [CpuMode.PROTECTED, CpuMode.PAGED, CpuMode.LONG, CpuMode.USER],
    "elf64": [CpuMode.LONG, CpuMode.USER],
    "multiboot": [CpuMode.PROTECTED],
    "linux": [CpuMode.LONG],
}


def _choose_format(rng: random.Random) -> str | None:
    """--format for a Linux kernel: mostly found by its contents, now and then insisted on."""
    return rng.choices([None, "linux", "elf", "flat"], weights=[16, 3, 1, 1])[0]


def _choose_mode(rng: random.Random, family: str) -> CpuMode | None:
    roll = rng.random()
    if roll < 0.5:
        return None
    return rng.choice(NATURAL_MODES[family] if roll < 0.9 else list(CpuMode))


def _choose_load_gpa(rng: random.Random, ram_size: int, size: int) -> int | None:
    if rng.random() < 0.6:
        return None
    return rng.choice([0, 0x500, 0x7C00, 0xFFFF, 0x1_0000, 0x10_0000, 0x9_FC00, ram_size - size,
                       ram_size - size + 1, ram_size - 1, 0xD000_0000 - 16, 4 * GIB, (1 << 64) - 1,
                       rng.randrange(1 << 32)])  # fmt: skip
