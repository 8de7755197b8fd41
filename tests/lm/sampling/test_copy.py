"""jelm.lm.sampling.copy: diffs whose context and removed lines are the parent's.

The fast token mask is checked against the byte automaton it abbreviates, on states
reached by real diffs; sampling with the shipped model is checked for what the
constraint promises (after a hunk's first line, every context or removed line is the
parent's next line; diffs apply without similarity placement), for leaving rows without a
parent alone, and for giving the same tokens with and without guessed tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from jelm.domains.sodarace.seeds import seed_source as seed_program
from jelm.lm.backends.jelm import JelmBackend
from jelm.lm.sampling import copy as C
from jelm.lm.sampling import generate
from jelm.lm.tokenizer import Tokenizer
from jelm.programs.diff import NME, DiffError, apply_diff, elm_prompt, extract_diff

PARENTS = ("square", "radial", "cppn_fixed", "cppn_mutable")
MESSAGE = "Changed the walker's joints."


@pytest.fixture(scope="module")
def shipped():
    backend = JelmBackend.shipped()
    return backend, C.copy_vocab(backend.tokenizer, backend.config.vocab_size)


def _data(texts):
    *data, mode = C.copy_text(texts, (len(texts), 1))
    return C.CopyText(*map(jnp.asarray, data)), C.initial_state(mode)


def test_token_bytes_spell_the_text(shipped):
    backend, vocab = shipped
    text = seed_program("square") + "@@ -3,4 +3,5 @@\n-    x = 1\n+    y = 2 # é\n"
    ids = backend.tokenizer.encode(text)
    spelled = b"".join(bytes(int(b) for b in np.asarray(vocab.bytes[i]) if b >= 0) for i in ids)
    assert spelled == text.encode("utf-8")
    kinds = np.asarray(vocab.kind)
    assert kinds[backend.tokenizer.eos_id] == C.SPECIAL
    assert kinds[ids[0]] in (C.NORMAL, C.NEWLINE)


def test_a_tokenizer_that_is_not_byte_level_is_refused():
    vocab = {"[UNK]": 0, "中": 1, "a": 2}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.add_special_tokens(["<|endoftext|>"])
    with pytest.raises(ValueError, match="byte-level"):
        C.copy_vocab(Tokenizer(backend))


@pytest.mark.slow  # the automaton over every token at every step of four diffs
def test_the_mask_is_the_automaton_on_states_of_real_diffs(shipped):
    """At every token of a few diffs (made by difflib and by hand), the tokens the mask
    allows are exactly those the byte automaton accepts from that state (in a hunk's
    first line, some of them: those that spell one of the parent lines nearest the
    header's line)."""
    backend, vocab = shipped
    tok = backend.tokenizer
    parent = seed_program("radial")
    lines = parent.splitlines(keepends=True)
    changed = [*lines[:20], lines[20].replace("5.0", "7.5"), "    # more\n", *lines[21:]]
    block = next(i for i, x in enumerate(lines) if x.rstrip().endswith(":") and x[0] == " ")
    from jelm.mutation.base import unified_diff

    diffs = [
        unified_diff(parent, "".join(changed), "walker.py"),
        "@@ -14,3 +14,3 @@\n" + "".join(" " + x for x in lines[13:16]),
        "--- a\n+++ b\n@@ -99,2 +99,2 @@\n+    tail\n",
        # an added line after a block's first line, at the rule's every step
        f"@@ -{block + 1},2 +{block + 1},4 @@\n {lines[block]}+    # note\n+\n"
        f"+{' ' * (8 + len(lines[block]) - len(lines[block].lstrip()))}z = 1\n"
        # brackets opened and closed over added lines
        f"+{' ' * (8 + len(lines[block]) - len(lines[block].lstrip()))}w = [(1,\n+ 2)]\n",
    ]
    data, start = _data([parent])
    stop = jnp.asarray([tok.eos_id, tok.token_id(NME), -1, -1, -1, -1, -1, -1], jnp.int32)
    v = vocab.bytes.shape[0]
    exact = jax.jit(
        lambda s: C.advance_bytes(
            C.CopyState(*(jnp.broadcast_to(x[..., None], (*x.shape, v)) for x in s)),
            vocab.bytes,
            data,
        )
    )
    allowed = jax.jit(lambda s: C.allowed(s, data, vocab, stop))
    advance = jax.jit(lambda s, t: C.advance(s, t, data, vocab))
    seen, ends = set(), []
    for diff in diffs:
        state = start
        for t in tok.encode(diff):
            mode = int(state.mode[0, 0])
            seen.add(mode)
            after = exact(state)
            kinds = np.asarray(vocab.kind)
            want = (np.asarray(after.mode[0, 0]) != C.REJECT) & (kinds != C.SPECIAL)
            changed = int(state.changed[0, 0]) > 0
            balanced = bool(C.brackets_balanced(state, data)[0, 0])
            want |= (
                (kinds == C.SPECIAL)
                & np.isin(np.arange(v), np.asarray(stop))
                & (mode not in (C.COPY, C.FIRST, *C.HEADER_MODES))
                & changed
                & balanced
            )
            # tokens the automaton cannot read: in free text and comments only
            prose = mode in (C.PRE_MID, C.HDR_REST) or (
                mode in (C.PLUS0, C.PLUS)
                and (int(state.comment[0, 0]) == 1 or int(state.removed[0, 0]) == 1)
            )
            want |= (kinds == C.LONG) & prose
            if not prose:
                want &= kinds != C.LONG
            got = np.asarray(allowed(state)[0, 0])
            if mode in (C.FIRST, C.LINE0):  # a first line: among the nearest parent lines
                assert not np.any(got & ~want), (mode, np.flatnonzero(got & ~want)[:5])
            else:
                assert np.array_equal(got, want), (mode, np.flatnonzero(got != want)[:5])
            assert got[t]  # the diffs copy the parent
            state = advance(state, jnp.asarray([[t]]))
        ends.append((int(state.mode[0, 0]), int(state.cursor[0, 0]), int(state.changed[0, 0])))
    # difflib's hunk: its first line found in the parent, the rest copied up to line 24;
    # the second one's three lines from line 14
    offset = lambda n: len("".join(lines[:n]))
    # the second diff changes nothing: it may not stop yet; the others may
    assert ends[:3] == [(C.LINE, offset(24), 1), (C.LINE, offset(16), 0), (C.LINE0, 0, 1)]
    assert ends[3][0] == C.LINE
    assert {
        C.PRE,
        C.HDR_AT,
        C.HDR_NUM,
        C.HDR_REST,
        C.LINE0,
        C.FIRST,
        C.LINE,
        C.COPY,
        C.PLUS,
    } <= seen


INDENTED = """def f(xs):
    for x in xs:
        y = (1,
             2)
        t = "#("
        g(x)  # call: it
    return y
"""


def _after(diff: str, parent: str = INDENTED) -> C.CopyState:
    """The automaton after the bytes of ``diff`` for ``parent`` (padded to one length:
    one compiled program for every case)."""
    data, start = _data([parent])
    bts = np.full((1, 1, 256), -1, np.int32)
    bts[0, 0, : len(diff.encode())] = np.frombuffer(diff.encode(), np.uint8)
    return _run_bytes(start, jnp.asarray(bts), data)


_run_bytes = jax.jit(C.advance_bytes)


def _mode_after(diff: str, parent: str = INDENTED) -> int:
    """The automaton's mode after the bytes of ``diff`` for ``parent``."""
    return int(_after(diff, parent).mode[0, 0])


@pytest.mark.parametrize(
    ("hunk", "keeps"),
    [
        ("@@ -2,2 +2,3 @@\n     for x in xs:\n+        z = 1\n", True),  # deeper after ":"
        ("@@ -2,2 +2,3 @@\n     for x in xs:\n+    z = 1\n", False),  # not deeper
        ("@@ -2,2 +2,3 @@\n     for x in xs:\n+# note\n+\n+        z\n", True),  # free lines
        ("@@ -2,3 +2,4 @@\n     for x in xs:\n         y = (1,\n+  3,\n", True),  # in brackets
        ("@@ -3,2 +3,3 @@\n         y = (1,\n              2)\n+          k\n", False),
        ('@@ -5,2 +5,3 @@\n         t = "#("\n+            u\n', False),  # a string
        ("@@ -6,2 +6,3 @@\n         g(x)  # call: it\n+        h = 2\n", True),  # a comment
        ("@@ -6,2 +6,3 @@\n         g(x)  # call: it\n+    return 1\n", True),  # dedent
        ("@@ -6,2 +6,3 @@\n         g(x)  # call: it\n+            h\n", False),
        ("@@ -1,2 +1,3 @@\n-def f(xs):\n+    z = 1\n", True),  # nothing read yet: free
        ("@@ -2,2 +2,3 @@\n-    for x in xs:\n+        z = 1\n", True),
    ],
)
def test_added_lines_keep_pythons_indentation(hunk, keeps):
    """An added line is indented deeper after a line that opens a block, and not deeper
    after any other line (read from the new file's lines: context and added, not
    removed); comments, blank lines and lines inside brackets are free."""
    mode = _mode_after("--- a\n+++ b\n" + hunk)
    assert (mode != C.REJECT) == keeps, mode


def test_a_first_line_is_a_line_of_the_parent_nearest_the_header():
    """A hunk's first line must be a line of the parent (a made-up one is refused byte
    by byte); a line that appears twice is taken nearest the header's line."""
    parent = "x = 1\ny = 2\nx = 1\nz = 3\n"
    for diff, cursor in [
        ("@@ -1,2 +1,2 @@\n x = 1\n", len("x = 1\n")),
        ("@@ -3,2 +3,2 @@\n x = 1\n", len("x = 1\ny = 2\nx = 1\n")),
        ("@@ -3,2 +3,2 @@\n-y = 2\n", len("x = 1\ny = 2\n")),
    ]:
        end = _after(diff, parent)
        assert (int(end.mode[0, 0]), int(end.cursor[0, 0])) == (C.LINE, cursor), diff
    assert _mode_after("@@ -1,2 +1,2 @@\n x = 2\n", parent) == C.REJECT
    assert _mode_after("@@ -1,2 +1,2 @@\n x = 1 \n", parent) == C.REJECT
    assert _mode_after("@@ -1,2 +1,2 @@\n x = 1", parent) == C.FIRST


def test_the_nearest_first_lines_are_those_a_stable_sort_ranks_first():
    """A first line's candidates are cut to the ``near`` nearest the header's line, of
    two as near the earlier first: the same lines in the same order as a stable sort by
    distance, for centres before, inside and far past the parent, few or many
    candidates."""
    rng = np.random.default_rng(0)
    nl, near = 40, 6
    cand = rng.random((300, nl)) < rng.choice([0.05, 0.3, 0.9], (300, 1))
    center = rng.choice([-1, 0, 7, 20, 39, 45, 10**6], 300) + rng.integers(-2, 3, 300)
    line, ok = C._nearest(jnp.asarray(cand), jnp.asarray(center), near)
    for i in range(len(cand)):
        want = sorted(np.flatnonzero(cand[i]), key=lambda j: abs(j - center[i]))[:near]
        got = np.asarray(line[i])[np.asarray(ok[i])]
        assert list(got) == want, (center[i], np.flatnonzero(cand[i]))
        assert list(np.asarray(ok[i])) == [True] * len(want) + [False] * (near - len(want))


BRACKETED = """\
x = f(1,
      2)
y = [3]
"""


@pytest.mark.parametrize(
    ("hunk", "keeps"),
    [
        ("@@ -1,2 +1,3 @@\n x = f(1,\n+      3,\n       2)\n", True),
        ("@@ -2,2 +2,3 @@\n       2)\n+z = (1))\n", False),  # closes what is not open
        ("@@ -2,2 +2,3 @@\n       2)\n+z = (1]\n", False),  # closes "(" with "]"
        # a hunk that begins inside the parent's brackets knows them
        ("@@ -2,2 +2,2 @@\n-      2)\n+      5)\n", True),
        ("@@ -2,2 +2,2 @@\n-      2)\n+      5]\n", False),
        ("@@ -2,2 +2,2 @@\n-      2)\n+      5,\n+      6)\n", True),
        # the next hunk begins only where the brackets open are the parent's
        ("@@ -1,1 +1,1 @@\n-x = f(1,\n+x = 1\n@@ -3,1 +3,1 @@\n", False),
        ("@@ -1,2 +1,1 @@\n-x = f(1,\n-      2)\n+x = 1\n@@ -3,1 +3,1 @@\n", True),
    ],
)
def test_added_lines_close_only_the_brackets_open(hunk, keeps):
    """Once a hunk's first line says where it is, an added line may close only the
    bracket open on top, and a hunk ends only where the new file's brackets are the
    parent's."""
    mode = _mode_after("--- a\n+++ b\n" + hunk, BRACKETED)
    assert (mode != C.REJECT) == keeps, mode


def test_a_diff_ends_where_its_brackets_are_the_parents():
    data, _ = _data([BRACKETED])
    ends = lambda diff: bool(C.brackets_balanced(_after(diff, BRACKETED), data)[0, 0])
    assert not ends("@@ -1,1 +1,1 @@\n-x = f(1,\n+x = 1\n")
    assert ends("@@ -1,2 +1,1 @@\n-x = f(1,\n-      2)\n+x = 1\n")
    assert ends("@@ -1,1 +1,1 @@\n-x = f(1,\n+x = g(1,\n")
    assert ends("@@ -1,1 +1,1 @@\n+z = (\n")  # before its first line: not known


@pytest.mark.parametrize(
    ("header", "keeps"),
    [
        ("@@ -3,2 +3,3 @@\n", True),
        ("@@ -3 +3 @@\n", True),
        ("@@ -3,2 +4,3 @@ def f(xs):\n", True),  # text after the header is free
        ("@@ -24,4 + right,6 @@\n", False),  # the model's made-up headers
        ("@@ -19,7 + back\n", False),
        ("@@ - + OFFSET, hip,6 @@\n", False),
        ("@@ -3,2 +3,3\n", False),
        ("@ -3,2 +3,3 @@\n", False),
        (" def f(xs):\n@@ -3,2 +3,3 @@\n", False),  # a hunk's line before any header
        ("\n@@ -3,2 +3,3 @@\n", True),
    ],
)
def test_hunk_headers_follow_their_grammar(header, keeps):
    mode = _mode_after("--- a\n+++ b\n" + header)
    assert (mode == C.LINE0) == keeps and (mode == C.REJECT) != keeps, mode


def _hunks_copy_the_parent(diff: str, parent: str, cut: bool = False) -> bool:
    """After each hunk's first context or removed line, the further ones are consecutive
    lines of ``parent`` (``cut``: the diff's last line may be cut short). Lines before
    the first hunk header are free text."""
    lines = parent.splitlines()
    run: list[str] | None = None
    first = True
    in_hunk = False
    for line in diff.splitlines()[: -1 if cut else None]:
        if line.startswith("@@"):
            run, first, in_hunk = None, True, True
            continue
        if not in_hunk or not line or line[0] not in " -":
            continue
        if first:
            first = False
            continue
        body = line[1:]
        run = [body] if run is None else [*run, body]
        if not any(lines[i : i + len(run)] == run for i in range(len(lines))):
            return False
    return True


@pytest.fixture(scope="module")
def sampled(shipped):
    """Diffs of the paper's seeds by the shipped model, unconstrained and constrained."""
    backend, vocab = shipped
    tok = backend.tokenizer
    parents = [seed_program(s) for s in PARENTS for _ in range(3)]
    prompts = [tok.encode(elm_prompt(p, MESSAGE, "walker.py")) for p in parents]
    kwargs = dict(
        max_new_tokens=160,
        temperature=0.8,
        top_p=0.95,
        stop_token_ids=[tok.eos_id, tok.token_id(NME)],
        pad_id=tok.pad_id,
    )
    key = jax.random.key(3)
    n_all = len(prompts)

    def run(copy, n=n_all, **kw):
        return generate(
            backend.params, backend.config, prompts[:n], key, copy=copy, copy_vocab=vocab, **kw
        )

    return parents, run, run(None, **kwargs), run(parents, **kwargs), kwargs


def _applies(diff: str, parent: str) -> bool:
    try:
        apply_diff(parent, diff, similar=None)
    except DiffError:
        return False
    return True


@pytest.mark.slow  # samples 24 diffs with the shipped model, with and without the constraint
def test_sampled_diffs_copy_their_parents_and_apply(shipped, sampled):
    backend, _ = shipped
    parents, _, free, held, _ = sampled
    diffs = [extract_diff(backend.tokenizer.decode(g.tokens)) for g in held]
    for g, d, p in zip(held, diffs, parents, strict=True):
        assert _hunks_copy_the_parent(d, p, cut=g.finish_reason == "length")
    for g, d in zip(held, diffs, strict=True):  # a diff that stops has changed something
        edits = [x for x in d.splitlines() if x[:1] in "+-" and x[:3] not in ("+++", "---")]
        assert edits or g.finish_reason == "length"
    n_held = sum(_applies(d, p) for d, p in zip(diffs, parents, strict=True))
    n_free = sum(
        _applies(extract_diff(backend.tokenizer.decode(g.tokens)), p)
        for g, p in zip(free, parents, strict=True)
    )
    assert n_held >= len(parents) // 2 and n_held > n_free


@pytest.mark.slow
def test_rows_without_a_parent_and_guessed_tokens_change_nothing(sampled):
    """A row without a parent samples what it samples unconstrained; guessed tokens
    change no token under the constraint."""
    parents, run, free, held, kwargs = sampled
    mixed = [None if i % 2 else p for i, p in enumerate(parents)]
    for i, g in enumerate(run(mixed, **kwargs)):
        assert g.tokens == (free[i] if i % 2 else held[i]).tokens
    one = run(parents[:2], 2, drafts=0, **kwargs)
    assert [g.tokens for g in one] == [g.tokens for g in held[:2]]


def test_a_parent_too_long_is_not_constrained():
    long = "x = 1\n" * (C.TEXT_LINES + 1)
    *_, mode = C.copy_text([long, "x = 1", None], (3,))
    assert mode.tolist() == [C.OFF, C.PRE, C.OFF]


def test_a_backend_copies_only_when_asked_and_able(shipped):
    from jelm.lm.operators import LMDiffOperator

    backend, _ = shipped
    assert backend.copies
    op = LMDiffOperator(backend, [(MESSAGE, 1.0)], "walker.py")
    assert op.copy_from(["a"]) == {"copy_from": ["a"]}
    assert LMDiffOperator(backend, [(MESSAGE, 1.0)], "walker.py", copy=False).copy_from(["a"]) == {}

    class Server:  # a backend without the constraint (an OpenAI-compatible server)
        name = "server"

    assert LMDiffOperator(Server(), [(MESSAGE, 1.0)], "walker.py").copy_from(["a"]) == {}
    with pytest.raises(ValueError, match="2 parents for 1 prompts"):
        backend.complete(["x"], copy_from=["a", "b"])
