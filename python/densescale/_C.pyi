"""Type stub of the compiled CPU kernels (csrc/). Pointers are passed as integer addresses by the
launchers in densescale.ops, which validate every argument first. search_topk and
score_candidates return (bad_query, bad_row): the smallest query / corpus row whose scores came
out NaN/Inf, (-1, -1) when all were finite."""

def isa() -> str: ...
def detected_isa() -> str: ...
def max_threads() -> int: ...
def contrastive_loss_cpu(
    q: int,
    p: int,
    neg: int,
    doc_ids: int,
    dtype: int,
    B: int,
    Np: int,
    K: int,
    D: int,
    G: int,
    in_batch: bool,
    symmetric: bool,
    row_offset: int,
    scale: float,
    weights: int,
    col_lse_in: int,
    loss: int,
    dq: int,
    dc: int,
    col_lse_out: int,
    threads: int,
    block_rows: int,
    isa: int,
) -> float: ...
def contrastive_loss_isa(isa: int = -1) -> str: ...
def search_topk(
    queries: int,
    M: int,
    D: int,
    corpus: int,
    N: int,
    corpus_stride: int,
    corpus_type: int,
    row_scale: int,
    k: int,
    id_offset: int,
    out_scores: int,
    out_ids: int,
    threads: int = 0,
    isa: str = "",
) -> tuple[int, int]: ...
def score_candidates(
    queries: int,
    M: int,
    D: int,
    corpus: int,
    N: int,
    corpus_stride: int,
    corpus_type: int,
    ids: int,
    C: int,
    out: int,
    threads: int = 0,
    isa: str = "",
) -> tuple[int, int]: ...

# Low-precision screen (csrc/screen.h): bf16 / int8 screening with a proven bound + exact
# rescoring.
def screen_engine() -> str: ...
def screen_engines() -> list[str]: ...
def screen_format(engine: str) -> str: ...
def screen_pack(
    corpus: int,
    N: int,
    D: int,
    corpus_stride: int,
    corpus_type: int,
    row_scale: int,
    cpack: int,
    meta: int,
    Np: int,
    Dp: int,
    threads: int = 0,
    format: str = "bf16",
) -> bool: ...
def search_topk_screened(
    queries: int,
    M: int,
    D: int,
    cpack: int,
    meta: int,
    Np: int,
    Dp: int,
    corpus: int,
    N: int,
    corpus_stride: int,
    corpus_type: int,
    row_scale: int,
    k: int,
    id_offset: int,
    out_scores: int,
    out_ids: int,
    fallback: int,
    threads: int = 0,
    engine: str = "amx",
    bound_scale: float = 1.0,
    cand_limit: int = 4096,
) -> tuple[int, int, int, int]: ...
def screen_bounds(
    queries: int,
    M: int,
    D: int,
    cpack: int,
    meta: int,
    Np: int,
    Dp: int,
    N: int,
    engine: str,
    S: int,
    E: int,
) -> None: ...
def screen_compact(
    u: int, l: int, id: int, n: int, k: int, t: float, epilogue: str
) -> tuple[float, int]: ...
