"""Ops: the fused contrastive loss and exact search, their launchers and backend dispatch.

The loss, in the order a call flows: ``contrastive_loss.py`` (public API, input checks, backend
choice; ``_loss_inputs.py`` checks scale and doc ids) -> ``_loss_autograd.py`` (the one autograd
Function) -> a backend module following the protocol of ``_loss_spec.py`` (which also holds the
maths as a plain-torch reference and ``LossInputs``): ``_loss_cpp.py`` (C++ kernels) or
``_loss_triton.py`` (Triton bodies in ``densescale.kernels``). Search: ``search.py`` and its
``_search_*.py`` backends.
"""
