"""The subcommands of ``densescale`` (:mod:`densescale.cli` builds the parser and dispatches):

- ``train_eval``: ``train``, ``eval`` (also zero-shot, any sentence-transformers model), ``search``;
- ``export``: runs and study cells as sentence-transformers folders;
- ``study``: ``study`` and ``report``;
- ``budget``: budget answers from usable laws;
- ``_common``: the optional TOML file and the collection flags.

``data`` lives with its package (:mod:`densescale.data.cli`).
"""
