"""Proof that claims can fail: each claim also runs on the counterfeits declared at it, and must go red.

A claim declares the counterfeits (bertspec.proof.counterfeits) it must fail on::

    @pytest.mark.counterfeits("mask_dropped", "mask_inverted")
    def test_padded_keys_get_exactly_zero_attention_probability(bert, evidence): ...

and collection adds, beside the claim's own items, one ordinary pytest item per
counterfeit and model (``…[eager-counterfeit=mask_dropped]``): the same test
function, whose model fixture yields the counterfeit, marked as a strict
expected failure on an AssertionError. A claim that stayed green on it would
prove nothing about that mechanism, and its item fails (XPASS strict). Every
fixture built on the model (a padded batch, a trace) is built on the counterfeit.

Marker keyword arguments fix the claim's own parameters for the counterfeit run
(``@pytest.mark.counterfeits("…", setting="several_positions")``); a parameter
left out takes its first value. The attention implementation and the family
are not fixed: each model under test gets its counterfeit runs (a claim marked
``across_families`` gets them on every bundled family in the default run too),
and a run whose counterfeit cannot be built on its family skips as not
applicable, as does the claim itself where its mechanism is another family's.
"""

import pytest

# No torch at import: conftest.py imports this module before a bad option is refused.
COUNTERFEIT = pytest.StashKey[str]()  # on a counterfeit run's item: the counterfeit's name
COLLECTED = pytest.StashKey[list]()  # on the config: every item of the collection, counterfeit runs last
MODEL_PARAMETERS = ("attn_implementation", "family")  # every value gets its counterfeit run


def declared(function) -> list[tuple[str, dict]]:
    """(counterfeit name, the claim's parameters for that run) for every counterfeits marker on a test function."""
    marks = [m for m in getattr(function, "pytestmark", []) if m.name == "counterfeits"]
    return [(name, dict(mark.kwargs)) for mark in marks for name in mark.args]


def counterfeit_of(item) -> str | None:
    """The counterfeit an item runs its claim on, or None for the claim's own run."""
    return item.stash.get(COUNTERFEIT, None)


def add_counterfeit_runs(items: list, config) -> None:
    """Append to ``items`` the counterfeit runs of every claim among them that declares counterfeits (before -k, -m
    or --deselect narrow the session: the claim that checks them sees every pair)."""
    from bertspec.proof import counterfeits

    runs = []
    firsts = first_values(items)
    for item in items:
        for name, parameters in declared(getattr(item, "obj", None)):
            if name not in counterfeits.REGISTRY:
                raise pytest.UsageError(f"{item.nodeid} declares unknown counterfeit {name!r}")
            if _runs_with(item, parameters, firsts.get(getattr(item, "originalname", None), {})):
                runs.append(_counterfeit_run(item, name))
    items.extend(runs)
    config.stash[COLLECTED] = list(items)


def first_values(items) -> dict[str, dict]:
    """function -> {parameter: its first value}, in collection order (the order of its parametrize values).

    pytest 9's ``callspec.indices`` numbers the function's whole parameter grid, not each parameter's own list, so
    "the first value" is read from the items themselves."""
    firsts = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            seen = firsts.setdefault(item.originalname, {})
            for key, value in callspec.params.items():
                seen.setdefault(key, value)
    return firsts


def _runs_with(item, parameters: dict, firsts: dict) -> bool:
    """Whether this parametrization of the claim is the one its counterfeit runs use."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return True
    for key, value in callspec.params.items():
        if key in parameters:
            if value != parameters[key]:
                return False
        elif key not in MODEL_PARAMETERS and value != firsts[key]:
            return False
    return True


def _counterfeit_run(item, name: str):
    """The claim's item again, as ``…[eager-counterfeit=NAME]``: its parameters and fixtures, the counterfeit's name
    in its stash (read by the model fixture), expected to fail on an AssertionError, strictly."""
    import dataclasses

    if getattr(item, "callspec", None) is None:
        raise pytest.UsageError(f"{item.nodeid} declares counterfeits but does not run on the model fixture")
    # The node id is made of the callspec's ids; the counterfeit's is one more.
    callspec = dataclasses.replace(item.callspec, _idlist=[*item.callspec._idlist, f"counterfeit={name}"])
    run = pytest.Function.from_parent(item.parent, name=f"{item.originalname}[{callspec.id}]", callspec=callspec,
                                      originalname=item.originalname,
                                      fixtureinfo=item._fixtureinfo)  # the claim's fixtures, its parameters among them
    run.stash[COUNTERFEIT] = name
    run.add_marker(pytest.mark.xfail(strict=True, raises=AssertionError,
                                     reason=f"the claim must go red on the counterfeit {name}"))
    run.user_properties.append(("teeth", {"counterfeit": name, "claim": item.originalname,
                                          "implementation": callspec.params.get("attn_implementation"),
                                          "family": callspec.params.get("family")}))
    return run


def broken(request, model):
    """The model fixture's value for an item: the model itself, or, on a counterfeit run, that counterfeit of it
    (a context manager either way)."""
    from contextlib import nullcontext

    from bertspec.proof import counterfeits, scope

    name = counterfeit_of(request.node)
    if name is None:
        return nullcontext(model)
    reason = counterfeits.why_not(name, model)
    if reason:
        scope.not_applicable(model, f"{name}: {reason}")
    return counterfeits.REGISTRY[name](model)
