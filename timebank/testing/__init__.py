"""Test helpers for software built on timebank: a world factory, a manual clock, Hypothesis
strategies, a reusable state machine and a pytest plugin.

Install with the ``testing`` extra (``pip install "timebank[testing]"``): the strategies and
the state machine need Hypothesis, the plugin needs pytest. This package's ``__init__``
imports nothing, so the pytest plugin loads cheaply, and ``timebank.testing.world`` (the
world factory and the clock) works without Hypothesis.

* :mod:`timebank.testing.world` -- :func:`make_world`, :class:`World`, :class:`ManualClock`
* :mod:`timebank.testing.commands` -- the time-bank commands as data, and how to run them
* :mod:`timebank.testing.strategies` -- Hypothesis strategies, valid and invalid
* :mod:`timebank.testing.machine` -- :class:`TimeBankMachine`, to subclass
* :mod:`timebank.testing.plugin` -- the pytest fixtures (``timebank_*``)
* :mod:`timebank.testing.plans` -- :func:`query_plans`, the plans of what an action ran
"""
