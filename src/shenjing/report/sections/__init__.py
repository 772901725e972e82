"""The report's sections: one module per view, named as its CLI command (``embed``, ``maps``,
``filters``, ``weights``, ``dynamics``, ``landscape``, ``hessian``, ``fit``, ``warp``), and
``run`` for the run itself (overview, model, training record).

Each module reads only the files its stage wrote (through :mod:`shenjing.report.run_files`)
and returns a :class:`~shenjing.report.blocks.Section` (or, for views shown inside another
view's section — filters in maps, weights in dynamics — the blocks that section places).
"""
