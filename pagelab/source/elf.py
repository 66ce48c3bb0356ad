"""Just enough ELF64 (little-endian, x86-64) to symbolize page owner frames: sections, symbols, build id.

vmlinux and a ``.ko`` are read the same way: the symbol table gives each function's address (or, in a
relocatable ``.ko``, its offset inside its section) and size, which is what ``func+0x1c/0x54`` needs to
become an address. The GNU build id (a hash the linker writes over the linked content) keys the cache.
Raises ElfError for a file that is not a readable ELF64 little-endian object.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_SHT_SYMTAB = 2
_SHT_NOTE = 7
_SHT_NOBITS = 8
_STT_FUNC = 2
_STT_NOTYPE = 0
_SHF_EXECINSTR = 0x4
_NT_GNU_BUILD_ID = 3
ET_REL = 1


class ElfError(Exception):
    """Not an ELF64 little-endian file, or a truncated one."""


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    value: int  # address (vmlinux) or offset in its section (relocatable .ko)
    size: int
    section: str


class Elf:
    """An ELF file's sections; ``functions()`` and ``build_id()`` read only the parts they need."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                head = f.read(_EHDR.size)
                if len(head) < _EHDR.size or head[:4] != b"\x7fELF":
                    raise ElfError(f"{path}: not an ELF file")
                if head[4] != 2 or head[5] != 1:
                    raise ElfError(f"{path}: not a 64-bit little-endian ELF file")
                fields = _EHDR.unpack(head)
                self.type = fields[1]
                shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
                f.seek(shoff)
                table = f.read(shentsize * shnum)
                if len(table) < shentsize * shnum or shentsize < _SHDR.size:
                    raise ElfError(f"{path}: truncated section table")
                raw = [_SHDR.unpack_from(table, i * shentsize) for i in range(shnum)]
                names_hdr = raw[shstrndx]
                f.seek(names_hdr[4])
                names = f.read(names_hdr[5])
        except OSError as err:
            raise ElfError(f"{path}: cannot read ({err.strerror or err})") from None
        except (struct.error, IndexError):
            raise ElfError(f"{path}: malformed ELF headers") from None
        self.sections = [Section(_cstr(names, h[0]), h[1], h[2], h[3], h[4], h[5], h[6], h[9]) for h in raw]

    def _read(self, sec: Section) -> bytes:
        if sec.type == _SHT_NOBITS:
            return b""
        with open(self.path, "rb") as f:
            f.seek(sec.offset)
            data = f.read(sec.size)
        if len(data) != sec.size:
            raise ElfError(f"{self.path}: section {sec.name} is truncated")
        return data

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def has_line_info(self) -> bool:
        """True when the file carries DWARF line tables (``.debug_line``)."""
        sec = self.section(".debug_line")
        return sec is not None and sec.size > 0

    def build_id(self) -> str | None:
        """The GNU build id as hex, or None when the linker wrote none."""
        for sec in self.sections:
            if sec.type != _SHT_NOTE:
                continue
            data, pos = self._read(sec), 0
            while pos + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                name_end = pos + 12 + ((namesz + 3) & ~3)
                desc = data[name_end : name_end + descsz]
                if ntype == _NT_GNU_BUILD_ID and data[pos + 12 : pos + 12 + namesz].rstrip(b"\0") == b"GNU":
                    return desc.hex()
                pos = name_end + ((descsz + 3) & ~3)
        return None

    def functions(self) -> dict[str, list[Symbol]]:
        """Code symbols by name (a static name can occur several times: every definition is kept).

        Functions, and the untyped symbols of executable sections: assembly entry points
        (``asm_exc_page_fault``, ``entry_SYSCALL_64_after_hwframe``) are SYM_CODE, not STT_FUNC.
        """
        out: dict[str, list[Symbol]] = {}
        for sec in self.sections:
            if sec.type != _SHT_SYMTAB:
                continue
            strtab = self._read(self.sections[sec.link])
            data = self._read(sec)
            for name_off, info, _other, shndx, value, size in _SYM.iter_unpack(data[: len(data) // 24 * 24]):
                if shndx == 0 or shndx >= len(self.sections):
                    continue
                kind = info & 0xF
                if kind != _STT_FUNC and not (kind == _STT_NOTYPE and self.sections[shndx].flags & _SHF_EXECINSTR):
                    continue
                name = _cstr(strtab, name_off)
                out.setdefault(name, []).append(Symbol(name, value, size, self.sections[shndx].name))
        return out


def _cstr(blob: bytes, offset: int) -> str:
    end = blob.find(b"\0", offset)
    return blob[offset : end if end >= 0 else len(blob)].decode("utf-8", "replace")
