"""Proof that claims can fail: each claim runs on the counterfeits declared at it and must go red.

A claim declares the counterfeits (bertspec.proof.counterfeits) it must fail on::

    @pytest.mark.counterfeits("mask_dropped", "mask_inverted")
    def test_padded_keys_get_exactly_zero_attention_probability(bert, evidence): ...

and a chapter generates its one meta-test from its own claims, at the end of the file::

    test_each_claim_goes_red_on_the_counterfeits_declared_at_it = teeth.meta_test(globals())

Marker keyword arguments fix the claim's own parameters for the counterfeit run
(``@pytest.mark.counterfeits("…", setting="several_positions")``); a parameter
left out takes the first value of the claim's parametrize list.
"""

import inspect

import pytest

from bertspec.proof import counterfeits, scope
from bertspec.handbook.evidence import Unread

MODEL_FIXTURES = ("bert", "mlm")


def declared(claim) -> list[tuple[str, dict]]:
    """(counterfeit name, the claim's parameters for that run) for every counterfeits marker on the claim."""
    marks = [m for m in getattr(claim, "pytestmark", []) if m.name == "counterfeits"]
    return [(name, dict(mark.kwargs)) for mark in marks for name in mark.args]


def cases(namespace: dict) -> list[tuple]:
    """(counterfeit name, claim, parameters) for every claim function in a chapter's namespace."""
    found = []
    for name, value in namespace.items():
        if name.startswith("test_") and inspect.isfunction(value):
            for counterfeit, parameters in declared(value):
                if counterfeit not in counterfeits.REGISTRY:
                    raise ValueError(f"{name} declares unknown counterfeit {counterfeit!r}")
                found.append((counterfeit, value, parameters))
    return found


def _default_parameters(claim) -> dict:
    """The first value of each of the claim's parametrize lists."""
    values = {}
    for mark in getattr(claim, "pytestmark", []):
        if mark.name == "parametrize":
            names = [n.strip() for n in mark.args[0].split(",")] if isinstance(mark.args[0], str) else mark.args[0]
            first = list(mark.args[1])[0]
            values.update(zip(names, first if len(names) > 1 else [first]))
    return values


def assert_claim_fails(claim, counterfeit, request, parameters: dict) -> None:
    """Run a claim with ``counterfeit`` as its model and require that it goes red (AssertionError)."""
    arguments = {**_default_parameters(claim), **parameters}
    names = inspect.signature(claim).parameters
    call = {}
    for name in names:
        if name in MODEL_FIXTURES:
            call[name] = counterfeit
        elif name == "evidence":
            call[name] = Unread()
        elif name in arguments:
            call[name] = arguments[name]
        else:
            call[name] = request.getfixturevalue(name)
    with pytest.raises(AssertionError):
        claim(**call)


def meta_test(namespace: dict):
    """The chapter's meta-test, parametrized by (counterfeit, claim) over the claims in ``namespace``."""
    found = cases(namespace)

    @pytest.mark.meta
    @pytest.mark.parametrize(("counterfeit", "claim", "parameters"), found,
                             ids=[f"{c}-{f.__name__.removeprefix('test_')}" for c, f, _ in found])
    def test_each_claim_goes_red_on_the_counterfeits_declared_at_it(bert, counterfeit, claim, parameters, request):
        """Each claim goes red on every counterfeit declared at it: the model under test with one mechanism broken.

        A counterfeit (bertspec/proof/counterfeits.py) is the model under test with
        one mechanism broken by a hook or on a deep copy: the mask dropped or
        inverted, the decoder untied, the loss counting -100 positions, ... A
        claim that stayed green on it would prove nothing about that mechanism,
        so each (counterfeit, claim) pair runs the claim on the counterfeit and
        requires an AssertionError. The handbook gathers the pairs into one table.

        Claim ID: P1.1
        Question: How do we know these claims could fail at all?
        问题：怎么知道这些结论真的可能失败？
        中文：每条结论在声明给它的每个反例上都会失败：反例就是破坏了一个机制的被测模型。
        原因：反例（bertspec/proof/counterfeits.py）是用 hook 或在深拷贝上破坏一个机制的被测模型：去掉或反转 mask、
        解开 decoder 的权重共享、loss 把 -100 位置也计入……在反例上仍然通过的结论对那个机制没有证明力，
        因此每一对（反例，结论）都让结论在反例上运行，并要求抛出 AssertionError。报告把所有组合汇成一张表。
        """
        request.node.user_properties.append(("teeth", {"counterfeit": counterfeit, "claim": claim.__name__,
                                                       "implementation": bert.attn_implementation}))
        if "mlm" in inspect.signature(claim).parameters and not bert.has_mlm_head:
            pytest.skip(f"{claim.__name__} needs an MLM head; {bert.source} has none")
        reason = counterfeits.why_not(counterfeit, bert)
        if reason:
            pytest.skip(scope.not_applicable_reason(bert.anatomy.name, f"{counterfeit}: {reason}"))
        with counterfeits.REGISTRY[counterfeit](bert) as broken:
            assert_claim_fails(claim, broken, request, parameters)

    test_each_claim_goes_red_on_the_counterfeits_declared_at_it.__module__ = namespace["__name__"]
    return test_each_claim_goes_red_on_the_counterfeits_declared_at_it
