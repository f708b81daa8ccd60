import densescale
from densescale._native import has_native, native


def test_imports_and_native_extension_loads():
    assert callable(densescale.contrastive_loss)
    assert has_native()
    assert native().isa() in ("avx512", "avx2", "generic")
    assert native().max_threads() >= 1
