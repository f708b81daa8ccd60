"""NaN and Inf never give a finite answer (SPEC 5): one property over every public entry that takes
vectors, every backend (the C++ kernels on each SIMD path, Triton in the interpreter, plain torch,
faiss), every layout, fp32 / fp16 / bf16, and a NaN, +Inf or -Inf in the first, a middle or the
last row of each argument, with forced small tiles so those rows fall in the first, a middle and
the last block of the kernels.

Each call must raise the error that names the argument and the row (``p row 17 holds NaN or
Inf``); none may return a finite value. The data make the hard case likely: column ``_HOT`` of
every vector is positive, so a -Inf there makes *every* score of its row -Inf (a log-sum-exp
drops such columns unless the kernel propagates them), and a +Inf every score +Inf.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch

import densescale
from densescale.ops import _loss_cpp, _loss_triton
from densescale.ops import search as search_mod

VALUES = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}
PLACES = ("first", "middle", "last")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ISAS = ("generic", "avx2", "avx512")
_HOT = 3  # the column that gets the non-finite value (positive in every vector)

# NaN/Inf inputs are the point here: numpy (Triton's interpreter, faiss glue) warns about them.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _native_ok() -> bool:
    try:
        from densescale._native import has_native

        return has_native()
    except ImportError:
        return False


def _isa_ok(isa: str) -> bool:
    if not _native_ok():
        return False
    from densescale._native import native

    return native().contrastive_loss_isa(_loss_cpp.ISA_CODES[isa]) == isa


def _row(n: int, place: str) -> int:
    return {"first": 0, "middle": n // 2, "last": n - 1}[place]


def _vectors(n: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) / math.sqrt(d)
    x[:, _HOT] = x[:, _HOT].abs() + 0.1
    return x.to(dtype)


def _poison(t: torch.Tensor, place: str, value: str) -> int:
    row = _row(t.shape[0], place)
    with torch.no_grad():
        t[row, _HOT] = VALUES[value]
    return row


def _raises(name: str | None, row: int | None):
    if name is None:
        return pytest.raises(ValueError, match="holds NaN or Inf")
    return pytest.raises(ValueError, match=rf"^{re.escape(name)} row {row}\b.*holds NaN or Inf")


def _never_finite(fn, name: str | None, row: int | None) -> None:
    """``fn`` must raise the row error; a returned value (finite or not) fails with what came."""
    with _raises(name, row):
        out = fn()
        pytest.fail(f"returned {out!r} instead of raising for {name} row {row}")


def _every_value_and_place(case) -> None:
    """Run ``case(value, place)`` (which calls ``_never_finite``) for NaN / +Inf / -Inf in the
    first, middle and last row; report every combination that failed, not just the first."""
    failures = []
    for value in VALUES:
        for place in PLACES:
            try:
                case(value, place)
            except (pytest.fail.Exception, AssertionError) as exc:
                failures.append(f"{value} in the {place} row: {str(exc).splitlines()[0]}")
    if failures:
        pytest.fail(f"{len(failures)} of 9 cases gave no row error:\n" + "\n".join(failures))


# ---------------------------------------------------------------------------------------------
# contrastive_loss: layouts x backends
# ---------------------------------------------------------------------------------------------

# name: (G, K, in_batch, symmetric, doc_ids)
LAYOUTS = {
    "pairs": (1, 0, True, False, False),
    "grouped": (3, 0, True, False, False),
    "pool": (1, 13, True, False, False),
    "grouped_pool": (2, 13, True, False, False),
    "not_in_batch": (2, 13, False, False, False),
    "symmetric": (2, 13, True, True, False),
    "doc_ids": (2, 13, True, False, True),
    "doc_ids_not_in_batch": (2, 13, False, False, True),
}
_BLAS_LAYOUTS = ("pairs", "grouped", "pool", "grouped_pool")  # what the BLAS schedule runs


def _loss_inputs(layout: str, B: int, D: int, dtype: torch.dtype):
    G, K, in_batch, symmetric, with_ids = LAYOUTS[layout]
    q = _vectors(B, D, dtype, 1)
    p = _vectors(B * G, D, dtype, 2)
    neg = _vectors(K, D, dtype, 3) if K else None
    doc_ids = None
    if with_ids:
        # every query's first hard negative duplicates its positive (masked for that query; with
        # in_batch=False masked for everyone), and pool row 1 duplicates query 0's positive
        ids = torch.arange(B * G + K, dtype=torch.int64) + 100
        ids[1 : B * G : G] = ids[0 : B * G : G]
        ids[B * G + 1] = ids[0]
        doc_ids = ids
    kwargs = {"negatives": neg, "in_batch": in_batch, "symmetric": symmetric, "doc_ids": doc_ids}
    return q, p, neg, kwargs


def _loss_args(layout: str) -> tuple[str, ...]:
    return ("q", "p", "negatives") if LAYOUTS[layout][1] else ("q", "p")


def _loss_case(layout, dtype, arg, grad, B, D, backend):
    """All nine (value, place) cases of one argument of one layout on one backend."""

    def case(value, place):
        q, p, neg, kwargs = _loss_inputs(layout, B, D, dtype)
        row = _poison({"q": q, "p": p, "negatives": neg}[arg], place, value)
        if grad:
            for t in (q, p, neg):
                if t is not None:
                    t.requires_grad_()
        _never_finite(
            lambda: densescale.contrastive_loss(q, p, scale=2.0, backend=backend, **kwargs),
            arg,
            row,
        )

    _every_value_and_place(case)


def _grid(layouts):
    return [
        pytest.param(layout, arg, id=f"{layout}-{arg}")
        for layout in layouts
        for arg in _loss_args(layout)
    ]


def _pin_cpp(monkeypatch, isa: str, threads: int) -> None:
    """Pin the C++ loss kernel to one SIMD path, 4-row blocks and ``threads`` (column split)."""
    if not _isa_ok(isa):
        pytest.skip(f"{isa} kernels not available on this CPU / build")
    run = _loss_cpp.run

    def pinned(*args, **kwargs):
        return run(*args, **{**kwargs, "isa": isa, "block_rows": 4, "threads": threads})

    monkeypatch.setattr(_loss_cpp, "run", pinned)


@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "grad"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("layout", "arg"), _grid(LAYOUTS))
@pytest.mark.parametrize("isa", ISAS)
def test_loss_cpp(monkeypatch, isa, layout, arg, dtype, grad):
    # B = 10 rows in blocks of 4: the first / middle / last row is in the first / middle / last
    # block; D = 20 leaves a tail after whole SIMD vectors
    _pin_cpp(monkeypatch, isa, 1)
    _loss_case(layout, DTYPES[dtype], arg, grad, 10, 20, "cpp")


@pytest.mark.parametrize(("layout", "arg"), _grid(LAYOUTS))
def test_loss_cpp_two_threads(monkeypatch, layout, arg):
    """Two threads split the columns: each keeps partial row statistics that are merged."""
    isa = next((i for i in reversed(ISAS) if _isa_ok(i)), "generic")
    _pin_cpp(monkeypatch, isa, 2)
    _loss_case(layout, torch.float32, arg, False, 10, 20, "cpp")


@pytest.fixture
def blas_schedule(monkeypatch):
    """Force the BLAS block schedule of the fp32 in-batch loss at a small size, 16-row blocks."""
    if not _native_ok():
        pytest.skip("C++ extension not built")
    monkeypatch.setattr(_loss_cpp, "_BLAS_WORK", 0)
    monkeypatch.setattr(_loss_cpp, "_BLAS_MAX_ROWS", 16)
    used = []
    blocked = _loss_cpp._run_blas_blocked

    def spy(*args, **kwargs):
        used.append(True)
        return blocked(*args, **kwargs)

    monkeypatch.setattr(_loss_cpp, "_run_blas_blocked", spy)
    return used


@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "grad"])
@pytest.mark.parametrize(("layout", "arg"), _grid(_BLAS_LAYOUTS))
def test_loss_cpp_blas_schedule(blas_schedule, layout, arg, grad):
    # B = 40 rows in blocks of 16: rows 0, 20, 39 are in the first, middle and last block
    _loss_case(layout, torch.float32, arg, grad, 40, 20, "cpp")
    assert blas_schedule, "the BLAS schedule did not run"


@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "grad"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("layout", "arg"), _grid(LAYOUTS))
def test_loss_torch(layout, arg, dtype, grad):
    _loss_case(layout, DTYPES[dtype], arg, grad, 10, 20, "torch")


@pytest.fixture
def triton_tiles(monkeypatch):
    """Triton in the interpreter with 16 x 16 x 16 tiles: B = 33 gives three row blocks (the last
    one row), the candidate columns several tiles."""
    if not _loss_triton.interpreter_active() and not torch.cuda.is_available():
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    try:
        _loss_triton._kernels()
    except ImportError as exc:
        pytest.skip(str(exc))
    fwd = _loss_triton.loss_forward

    def tiled(*args, **kwargs):
        return fwd(*args, **{**kwargs, "block_m": 16, "block_n": 16, "block_k": 16})

    monkeypatch.setattr(_loss_triton, "loss_forward", tiled)


# The interpreter is slow: every layout and argument in fp32 (forward only: the gradients come
# from a backward that never runs when the forward raises), bf16 / fp16 on two layouts.
_TRITON_CASES = [
    pytest.param(layout, arg, "fp32", id=f"{layout}-{arg}-fp32")
    for layout in LAYOUTS
    if layout != "grouped_pool"
    for arg in _loss_args(layout)
] + [
    pytest.param(layout, arg, dt, id=f"{layout}-{arg}-{dt}")
    for layout, dt in (("grouped_pool", "bf16"), ("doc_ids_not_in_batch", "fp16"))
    for arg in _loss_args(layout)
]


@pytest.mark.parametrize(("layout", "arg", "dtype"), _TRITON_CASES)
def test_loss_triton(triton_tiles, layout, arg, dtype):
    _loss_case(layout, DTYPES[dtype], arg, False, 33, 16, "triton")


# ---------------------------------------------------------------------------------------------
# Modules and trainer adapters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["q", "p", "negatives"])
@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "learnable"])
def test_contrastive_loss_module(learnable, arg):
    loss_fn = densescale.ContrastiveLoss(scale=5.0, learnable_scale=learnable)

    def case(value, place):
        q, p = _vectors(10, 20, torch.float32, 1), _vectors(20, 20, torch.float32, 2)
        neg = _vectors(13, 20, torch.float32, 3)
        row = _poison({"q": q, "p": p, "negatives": neg}[arg], place, value)
        _never_finite(lambda: loss_fn(q, p, negatives=neg), arg, row)

    _every_value_and_place(case)


def _st_loss(similarity: str):
    st = pytest.importorskip("sentence_transformers")
    from densescale.losses import FusedMultipleNegativesRankingLoss

    fct = getattr(st.util, similarity)
    return FusedMultipleNegativesRankingLoss(torch.nn.Identity(), similarity_fct=fct)


@pytest.mark.parametrize("grad", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("column", [0, 1, 2, 3], ids=["anchor", "positive", "neg1", "neg2"])
@pytest.mark.parametrize("similarity", ["cos_sim", "dot_score"])
def test_sentence_transformers_adapter(similarity, column, grad):
    loss_fn = _st_loss(similarity)
    B = 6
    name = ("q", "p", "negatives", "negatives")[column]

    def case(value, place):
        cols = [_vectors(B, 16, torch.float32, s).requires_grad_(grad) for s in range(4)]
        row = _poison(cols[column], place, value)
        row += B if column == 3 else 0  # the negative columns are stacked
        _never_finite(lambda: loss_fn.compute_loss_from_embeddings(cols), name, row)

    _every_value_and_place(case)


def test_sentence_transformers_adapter_forward():
    """Through ``forward``: the model's own embeddings carry the NaN."""
    loss_fn = _st_loss("cos_sim")

    class Emb(torch.nn.Module):
        def forward(self, features):
            x = _vectors(features["n"], 16, torch.float32, features["seed"])
            if features["seed"] == 1:
                x[2, 0] = math.nan
            return {"sentence_embedding": x}

    loss_fn.model = Emb()
    loss_fn.embed = lambda feats: [loss_fn.model(f)["sentence_embedding"] for f in feats]
    feats = [{"n": 5, "seed": 0}, {"n": 5, "seed": 1}]
    _never_finite(lambda: loss_fn(feats, None), "p", 2)


class _HiddenModel(torch.nn.Module):
    """A stand-in encoder: last_hidden_state = embedding of the token ids (token 9 is bad)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        with torch.no_grad():
            self.emb.weight[:, _HOT] = self.emb.weight[:, _HOT].abs() + 0.1

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=self.emb(input_ids))


@pytest.fixture(scope="module")
def hf_trainer(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import TrainingArguments

    from densescale.losses import ContrastiveTrainer

    model = _HiddenModel()
    out = str(tmp_path_factory.mktemp("hf"))
    args = TrainingArguments(output_dir=out, report_to=[], use_cpu=True)
    return model, lambda pooling: ContrastiveTrainer(model=model, args=args, pooling=pooling)


@pytest.mark.parametrize("side", ["query", "passage"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_trainer_compute_loss(hf_trainer, pooling, side):
    model, make = hf_trainer
    trainer = make(pooling)
    B, L = 6, 4
    name = "q" if side == "query" else "p"

    def case(value, place):
        with torch.no_grad():
            model.emb.weight[9, _HOT] = VALUES[value]
        ids = {s: torch.randint(0, 9, (B, L)) for s in ("query", "passage")}
        row = _row(B, place)
        ids[side][row, 0] = 9  # the first token: pooled by both "mean" and "cls"
        inputs = {}
        for s in ("query", "passage"):
            inputs[f"{s}_input_ids"] = ids[s]
            inputs[f"{s}_attention_mask"] = torch.ones(B, L, dtype=torch.long)
        _never_finite(lambda: trainer.compute_loss(model, inputs), name, row)

    _every_value_and_place(case)


# ---------------------------------------------------------------------------------------------
# search, score_candidates, FlatIndex
# ---------------------------------------------------------------------------------------------

SEARCH_BACKENDS = ("cpp-generic", "cpp-avx2", "cpp-avx512", "torch", "triton", "faiss")


@pytest.fixture
def search_backend(request, monkeypatch):
    """The backend name for ``densescale.search``; cpp pinned to one ISA via its launcher."""
    name = request.param
    if name.startswith("cpp"):
        isa = name.split("-")[1]
        if not _isa_ok(isa):
            pytest.skip(f"{isa} not available")
        cpp = search_mod._search_cpp
        monkeypatch.setattr(
            search_mod,
            "_search_cpp",
            lambda q, shards, k, cos, threads, isa_="": cpp(q, shards, k, cos, 1, isa),
        )
        real_native = search_mod.native

        class Pinned:  # score_candidates calls the extension directly
            def __getattr__(self, attr):
                fn = getattr(real_native(), attr)
                if attr != "score_candidates":
                    return fn
                return lambda *a: fn(*a[:-2], 1, isa)

        monkeypatch.setattr(search_mod, "native", lambda: Pinned())
        return "cpp"
    if name == "triton":
        if not _loss_triton.interpreter_active() and not torch.cuda.is_available():
            pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
        pytest.importorskip("triton")
    if name == "faiss":
        pytest.importorskip("faiss")
    return name


def _search_inputs(dtype, n=70, m=9, d=20):
    return _vectors(m, d, dtype, 5), _vectors(n, d, dtype, 6)


def _search_grid():
    out = []
    for backend in SEARCH_BACKENDS:
        for dtype in DTYPES:
            if backend == "faiss" and dtype != "fp32":
                continue  # faiss takes fp32 only
            for metric in ("ip", "cos"):
                # the interpreter is slow: Triton in fp32 both metrics, fp16 / bf16 "ip"
                if backend == "triton" and dtype != "fp32" and metric == "cos":
                    continue
                out.append(pytest.param(backend, dtype, metric, id=f"{backend}-{dtype}-{metric}"))
    return out


@pytest.mark.parametrize("arg", ["queries", "corpus", "shard"])
@pytest.mark.parametrize(
    ("search_backend", "dtype", "metric"), _search_grid(), indirect=["search_backend"]
)
def test_search(search_backend, dtype, metric, arg):
    # 70 corpus rows in chunks of 32 (torch / faiss / triton): first, middle and last chunk
    chunk = None if search_backend == "cpp" else 32

    def case(value, place):
        q, c = _search_inputs(DTYPES[dtype])
        if arg == "shard":  # a list of shards: the bad row is in the middle one
            shards = [c[:25], c[25:50].clone(), c[50:]]
            row = _poison(shards[1], place, value)
            corpus, name = shards, "corpus[1]"
        else:
            row = _poison(q if arg == "queries" else c, place, value)
            corpus, name = c, arg
        _never_finite(
            lambda: densescale.search(
                q, corpus, 5, metric=metric, backend=search_backend, chunk_rows=chunk
            ),
            name,
            row,
        )

    _every_value_and_place(case)


@pytest.mark.parametrize("arg", ["queries", "corpus"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "search_backend", ["cpp-generic", "cpp-avx2", "cpp-avx512", "torch", "triton"], indirect=True
)
def test_score_candidates(search_backend, dtype, arg):
    def case(value, place):
        q, c = _search_inputs(DTYPES[dtype])
        row = _poison(q if arg == "queries" else c, place, value)
        # every corpus row is a candidate of some query; padding (-1) in the last column
        ids = torch.arange(q.shape[0] * 8).reshape(q.shape[0], 8) % c.shape[0]
        ids = torch.cat([ids, torch.full((q.shape[0], 1), -1)], dim=1)
        _never_finite(
            lambda: densescale.score_candidates(q, c, ids, backend=search_backend), arg, row
        )

    _every_value_and_place(case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", ["ip", "cos"])
def test_flat_index(metric, dtype):
    from densescale.index import FlatIndex

    def case(value, place):
        q, c = _search_inputs(DTYPES[dtype])
        index = FlatIndex(20, metric=metric, dtype="float32")
        bad = c.clone()
        row = _poison(bad, place, value)
        _never_finite(lambda: index.add(bad), "vectors", row)
        assert len(index) == 0, "a rejected add stored vectors"
        index.add(c)
        row = _poison(q, place, value)
        for backend in ("auto", "torch", "cpp"):
            if backend == "cpp" and not _native_ok():
                continue
            _never_finite(lambda b=backend: index.search(q, 5, backend=b), "queries", row)

    _every_value_and_place(case)


# ---------------------------------------------------------------------------------------------
# contrastive_entropy and evaluate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["q_emb", "pos_emb", "pool_emb"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["dense", "drawn", "pool_rows"])
def test_contrastive_entropy(mode, dtype, arg):
    """Dense pool scoring, scoring of the drawn rows only, and a pool given as ``pool_rows``. A
    pool row that no draw touches cannot change the result (documented), so the bad pool row is
    always one that is drawn."""
    from densescale.eval import contrastive_entropy
    from densescale.eval.entropy import sample_negatives

    dt = DTYPES[dtype]
    P, D = 7, 16
    kw = {"num_negatives": 4, "repeats": 2, "seed": 3, "batch_size": 3}
    rows = torch.arange(0, 400, 2) if mode == "pool_rows" else None
    if rows is not None:
        kw["pool_rows"] = rows
    if mode == "dense":  # a small pool is scored densely
        n_pool, candidates = 12, torch.arange(12)
    else:  # a large pool: only drawn rows are scored
        n_pool = 400
        size = rows.numel() if rows is not None else n_pool
        drawn = sample_negatives(P, 4, size, repeats=2, seed=3)
        candidates = torch.unique(drawn)
        if rows is not None:
            candidates = rows[candidates]

    def case(value, place):
        q, pos, pool = _vectors(P, D, dt, 7), _vectors(P, D, dt, 8), _vectors(n_pool, D, dt, 9)
        if arg == "pool_emb":
            row = int(candidates[_row(candidates.numel(), place)])
            pool[row, _HOT] = VALUES[value]
        else:
            row = _poison({"q_emb": q, "pos_emb": pos}[arg], place, value)
        _never_finite(lambda: contrastive_entropy(q, pos, pool, **kw), arg, row)

    _every_value_and_place(case)


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    from densescale.models import build_encoder, train_tokenizer

    corpus_texts = [f"alpha beta w{i} gamma w{i % 5}" for i in range(30)]
    query_texts = [f"w{i} beta" for i in range(6)]
    tok = train_tokenizer(
        corpus_texts + query_texts, 60, tmp_path_factory.mktemp("tok") / "wp", min_frequency=1
    )
    torch.manual_seed(0)
    model = build_encoder("L1-H32", len(tok), out_dim=16)
    data = {
        "corpus_ids": [f"d{i}" for i in range(30)],
        "corpus_texts": corpus_texts,
        "query_ids": [f"q{i}" for i in range(6)],
        "query_texts": query_texts,
        "qrels": {f"q{i}": {f"d{i}": 1} for i in range(6)},
    }
    return model, tok, data


@pytest.mark.parametrize("which", ["query", "corpus"])
@pytest.mark.parametrize("ce_only", [False, True], ids=["search+ce", "ce_only"])
def test_evaluate(eval_setup, monkeypatch, ce_only, which):
    """``evaluate`` with an encoder whose output has one non-finite row (a query or a passage:
    the first passage is a test positive, the others are in the CE pool). The error names the
    search's or the contrastive entropy's argument."""
    import densescale.models.encode as enc_mod
    from densescale.eval import evaluate

    model, tok, data = eval_setup
    texts = data["query_texts"] if which == "query" else data["corpus_texts"]
    encode = enc_mod.encode_texts

    def case(value, place):
        bad_text = texts[_row(len(texts), place)]

        def poisoned(model_, tok_, batch_texts, *args, **kwargs):
            out = encode(model_, tok_, batch_texts, *args, **kwargs)
            batch_texts = list(batch_texts)
            if bad_text in batch_texts:
                out = out.clone()
                out[batch_texts.index(bad_text), 0] = VALUES[value]
            return out

        monkeypatch.setattr(enc_mod, "encode_texts", poisoned)
        run = lambda: evaluate(
            model,
            tok,
            **data,
            k=5,
            num_negatives=24 if ce_only else 4,  # CE only: every pool row is drawn
            repeats=2,
            metrics=() if ce_only else ("mrr@10",),
        )
        _never_finite(run, None, None)

    _every_value_and_place(case)
