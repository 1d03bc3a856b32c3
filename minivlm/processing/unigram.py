"""SentencePiece Unigram (Kudo 2018, "Subword Regularization"), by hand: the model file, SentencePiece's
normaliser, Viterbi over the piece scores, and decoding. No sentencepiece / protobuf dependency.

    spiece.model (protobuf)  -> pieces (text, log-probability score, type) + the normaliser's settings
    text -> normalise: the precompiled character map (e.g. nmt_nfkc, longest match first), extra
            whitespace removed, optional dummy prefix, ' ' -> '▁'
         -> Viterbi: the segmentation into pieces with the highest total score; a character no
            piece covers becomes <unk> (score: the lowest piece score - 10), runs of them merge
         -> pieces (their surface text) and ids

Every rule mirrors sentencepiece's C++ (normalizer.cc, unigram_model.cc EncodeOptimized,
sentencepiece_processor.cc) and is tested against the `sentencepiece` package on trained models.
"""
import struct
from dataclasses import dataclass

import numpy as np

SPACE = "\u2581"  # '▁', SentencePiece's visible space
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNK_PENALTY = 10.0  # unigram_model.cc kUnkPenalty


# --- the model file: protobuf wire format, only the fields we read ---------------------------------------
def _varint(buf, i):
    value, shift = 0, 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def proto_fields(buf):
    """A serialized protobuf message -> [(field number, value)]: ints for varints, bytes otherwise."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"not a SentencePiece model file: protobuf wire type {wire} at byte {i}")
        out.append((number, value))
    return out


@dataclass
class SentencePieceSpec:
    pieces: list                        # [(piece, score, type)], the id is the index
    model_type: int = 1                 # TrainerSpec: 1 unigram, 2 bpe, 3 word, 4 char
    byte_fallback: bool = False
    unk_id: int = 0
    unk_surface: str = " \u2047 "        # what an <unk> piece decodes to
    treat_whitespace_as_suffix: bool = False
    charsmap: bytes = b""               # NormalizerSpec.precompiled_charsmap
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def read_sentencepiece_model(path):
    """spiece.model -> SentencePieceSpec (field numbers from sentencepiece_model.proto)."""
    with open(path, "rb") as f:
        data = f.read()
    spec = SentencePieceSpec(pieces=[])
    for number, value in proto_fields(data):
        if number == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
            piece, score, kind = "", 0.0, NORMAL
            for n, v in proto_fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            spec.pieces.append((piece, score, kind))
        elif number == 2:  # TrainerSpec
            for n, v in proto_fields(value):
                if n == 3:
                    spec.model_type = v
                elif n == 24:
                    spec.treat_whitespace_as_suffix = bool(v)
                elif n == 35:
                    spec.byte_fallback = bool(v)
                elif n == 40:
                    spec.unk_id = v
                elif n == 44:
                    spec.unk_surface = v.decode("utf-8")
        elif number == 3:  # NormalizerSpec
            for n, v in proto_fields(value):
                if n == 2:
                    spec.charsmap = bytes(v)
                elif n == 3:
                    spec.add_dummy_prefix = bool(v)
                elif n == 4:
                    spec.remove_extra_whitespaces = bool(v)
                elif n == 5:
                    spec.escape_whitespaces = bool(v)
    if not spec.pieces:
        raise ValueError(f"{path} holds no SentencePiece pieces; is it a sentencepiece .model file?")
    return spec


# --- the normaliser ----------------------------------------------------------------------------------
class CharsMap:
    """The precompiled character map: a Darts double-array trie over UTF-8 byte strings whose values
    are offsets of the replacement strings (NUL-terminated) stored after it (normalizer.cc)."""

    def __init__(self, blob):
        self.units = None
        if blob:
            (trie_size,) = struct.unpack("<I", blob[:4])
            self.units = np.frombuffer(blob[4:4 + trie_size], dtype="<u4").tolist()
            self.strings = blob[4 + trie_size:]

    def longest_match(self, data, start):
        """(replacement bytes, bytes consumed) of the longest key that prefixes data[start:], or None."""
        units, best = self.units, None
        pos = (units[0] >> 10) << ((units[0] & (1 << 9)) >> 6)          # the root's offset
        for i in range(start, len(data)):
            pos ^= data[i]
            unit = units[pos]
            if unit & ((1 << 31) | 0xFF) != data[i]:                      # the label must be this byte
                break
            pos ^= (unit >> 10) << ((unit & (1 << 9)) >> 6)
            if (unit >> 8) & 1:                                          # a key ends here: its value
                offset = units[pos] & ((1 << 31) - 1)
                best = (self.strings[offset:self.strings.index(b"\0", offset)], i + 1 - start)
        return best


def _char_len(data, i):
    """Bytes in the UTF-8 character starting at data[i] (1 for an invalid lead byte)."""
    b = data[i]
    n = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
    return min(n, len(data) - i)


def normalize(text, spec, charsmap):
    """SentencePiece's Normalizer::Normalize: the character map, whitespace rules and escaping."""
    if not text:
        return ""  # no dummy prefix on empty input either
    data = text.encode("utf-8")

    def prefix(i):  # (normalised bytes, consumed) at byte i
        match = charsmap.longest_match(data, i) if charsmap.units is not None else None
        if match is not None:
            return match
        n = _char_len(data, i)
        return data[i:i + n], n

    space = SPACE.encode() if spec.escape_whitespaces else b" "
    out, i = bytearray(), 0
    if spec.remove_extra_whitespaces:  # heading spaces go
        while i < len(data):
            piece, n = prefix(i)
            if piece != b" ":
                break
            i += n
    if spec.add_dummy_prefix and not spec.treat_whitespace_as_suffix:
        out += space
    prev_space = spec.remove_extra_whitespaces
    while i < len(data):
        piece, n = prefix(i)
        i += n
        if spec.remove_extra_whitespaces and prev_space:
            piece = piece.lstrip(b" ")
        if piece:
            out += piece.replace(b" ", space) if spec.escape_whitespaces else piece
            prev_space = piece.endswith(b" ")
    if spec.add_dummy_prefix and spec.treat_whitespace_as_suffix:
        out += space
    if spec.remove_extra_whitespaces:  # trailing spaces go
        while out.endswith(space):
            del out[-len(space):]
    return out.decode("utf-8", errors="replace")


# --- the model ---------------------------------------------------------------------------------------
class UnigramModel:
    """pieces + scores -> the best segmentation of a normalised string (Viterbi, float32 sums as in C++)."""

    def __init__(self, spec: SentencePieceSpec):
        if spec.model_type != 1:
            raise ValueError(f"this SentencePiece model is of type {spec.model_type} (1 = unigram, 2 = bpe); "
                             f"only Unigram models are implemented")
        if spec.byte_fallback:
            raise ValueError("SentencePiece byte_fallback models are not implemented (SigLIP's is not one)")
        self.spec = spec
        self.charsmap = CharsMap(spec.charsmap)
        self.vocab = {p: i for i, (p, _, _) in enumerate(spec.pieces)}
        self.types = [t for _, _, t in spec.pieces]
        scores = [s for _, s, t in spec.pieces if t == NORMAL]
        self.min_score = np.float32(min(scores))
        self.max_score = np.float32(max(scores))
        self.unk_score = np.float32(self.min_score - np.float32(UNK_PENALTY))
        # The pieces text can match: NORMAL, USER_DEFINED and UNUSED (matched, then skipped).
        self.matchable = {p: i for i, (p, _, t) in enumerate(spec.pieces) if t in (NORMAL, USER_DEFINED, UNUSED) and p}
        self.longest = max(len(p) for p in self.matchable)

    def score(self, piece_id):
        piece, score, kind = self.spec.pieces[piece_id]
        if kind == USER_DEFINED:  # always wins over its parts (unigram_model.cc)
            return np.float32(len(piece.encode()) * self.max_score - np.float32(0.1))
        return np.float32(score)

    def viterbi(self, text):
        """A normalised string -> [(surface, id)]: best[j] = the best path ending at char j; a node
        replaces the current best only with a strictly higher score (the first found wins ties)."""
        n = len(text)
        best = [(np.float32(0.0), -1, -1)] + [None] * n  # (score, start, id)
        for start in range(n):
            if best[start] is None:
                continue
            here = best[start][0]
            has_single = False
            for end in range(start + 1, min(start + self.longest, n) + 1):  # every piece starting here
                pid = self.matchable.get(text[start:end])
                if pid is None or self.types[pid] == UNUSED:
                    continue
                candidate = np.float32(here + self.score(pid))
                if best[end] is None or candidate > best[end][0]:
                    best[end] = (candidate, start, pid)
                has_single |= end == start + 1
            if not has_single:
                candidate = np.float32(here + self.unk_score)
                if best[start + 1] is None or candidate > best[start + 1][0]:
                    best[start + 1] = (candidate, start, self.spec.unk_id)
        out, end = [], n
        while end > 0:
            _, start, pid = best[end]
            out.append((text[start:end], pid))
            end = start
        return out[::-1]

    def encode(self, text):
        """Raw text -> [(piece surface, id)], as sentencepiece's encode(out_type=str) and its ids:
        normalised, segmented, runs of unknown characters merged into one <unk> piece."""
        merged = []
        for surface, pid in self.viterbi(normalize(text, self.spec, self.charsmap)):
            if pid == self.spec.unk_id and merged and merged[-1][1] == pid:
                merged[-1] = (merged[-1][0] + surface, pid)
            else:
                merged.append((surface, pid))
        return merged

    def piece_id(self, piece):
        return self.vocab.get(piece, self.spec.unk_id)

    def decode(self, pieces):
        """Piece surfaces -> text, as sentencepiece's decode: control pieces vanish, the <unk> piece's
        own text becomes unk_surface, '▁' -> ' ', and the first piece's leading '▁' goes (when the model
        adds a dummy prefix or removes extra whitespace)."""
        strip_first = self.spec.add_dummy_prefix or self.spec.remove_extra_whitespaces
        out, first = [], True
        for piece in pieces:
            pid = self.piece_id(piece)
            kind = self.types[pid]
            if kind == CONTROL:
                continue
            if kind == UNKNOWN:
                text = self.spec.unk_surface if piece == self.spec.pieces[pid][0] else piece
            else:
                text = piece[1:] if first and strip_first and piece.startswith(SPACE) else piece
                text = text.replace(SPACE, " ")
            first = False
            out.append(text)
        return "".join(out)
