"""ctxmix_lite.exercises: check_function says what is wrong, returns/raises as documented."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctxmix_lite.exercises import (FAIL, PASS, case, check_function, check_value,
                                   strict_default, use_solution)


def softmax_ref(x, dim=-1):
    return torch.softmax(x, dim=dim)


CASES = [lambda: (torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),),
         case(torch.zeros(2, 5), label="all zeros"),
         case(torch.arange(6.0).reshape(2, 3), dim=0, label="dim 0")]


def run(fn, capsys, cases=CASES, **kw):
    kw.setdefault("strict", False)
    ok = check_function(fn, softmax_ref, cases, "softmax", **kw)
    return ok, capsys.readouterr().out


def test_pass(capsys):
    def mine(x, dim=-1):
        e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
        return e / e.sum(dim=dim, keepdim=True)

    ok, out = run(mine, capsys)
    assert ok is True
    assert out.startswith(f"{PASS} softmax: all 3 cases match the reference")


def test_not_implemented(capsys):
    def mine(x, dim=-1):
        raise NotImplementedError

    ok, out = run(mine, capsys)
    assert ok is False and out.startswith(f"{FAIL} softmax: not implemented yet")
    assert "SOLUTIONS = True" in out


def test_exception_shows_learner_line(capsys):
    def mine(x, dim=-1):
        return x @ x  # 3x4 @ 3x4 fails

    ok, out = run(mine, capsys)
    assert not ok
    assert "raised an error on case 1 of 3" in out and "RuntimeError" in out
    assert "of mine(): return x @ x" in out


def test_wrong_values_name_the_case_and_the_difference(capsys):
    def mine(x, dim=-1):
        return torch.softmax(x, dim=-1)  # ignores dim

    ok, out = run(mine, capsys)
    assert not ok
    assert "case 3 of 3 (dim 0)" in out and "max abs diff" in out and "at index" in out


def test_shape_and_dtype_and_type(capsys):
    ok, out = run(lambda x, dim=-1: torch.softmax(x, dim)[:1], capsys)
    assert not ok and "shape is (1, 4), expected (3, 4)" in out
    ok, out = run(lambda x, dim=-1: torch.softmax(x.double(), dim), capsys)
    assert not ok and "dtype is torch.float64, expected torch.float32" in out
    ok, out = run(lambda x, dim=-1: torch.softmax(x, dim).numpy(), capsys)
    assert not ok and "expected a torch.Tensor" in out


def test_tolerance_is_respected(capsys):
    ok, _ = run(lambda x, dim=-1: torch.softmax(x, dim) + 5e-6, capsys)
    assert ok
    ok, out = run(lambda x, dim=-1: torch.softmax(x, dim) + 5e-6, capsys, atol=1e-7, rtol=0)
    assert not ok and "atol=1e-07" in out


def test_nan_is_reported(capsys):
    ok, out = run(lambda x, dim=-1: torch.softmax(x, dim) * float("nan"), capsys)
    assert not ok and "non-finite" in out and "division by zero" in out


def test_hints_by_case_label_and_kind(capsys):
    bad = lambda x, dim=-1: torch.softmax(x, dim=-1)  # noqa: E731  fails on "dim 0"
    _, out = run(bad, capsys, hints={"dim 0": "use the dim argument"})
    assert "Hint: use the dim argument" in out
    _, out = run(bad, capsys, hints={"value": "kind hint"})
    assert "Hint: kind hint" in out
    _, out = run(bad, capsys, hints="one hint for all")
    assert "Hint: one hint for all" in out
    _, out = run(bad, capsys, hints=[None, None, "third"])
    assert "Hint: third" in out


def test_inputs_are_copied_for_each_call(capsys):
    def mutating(x, dim=-1):
        x.mul_(0)  # would corrupt the reference's input if shared
        return torch.softmax(torch.ones_like(x), dim)

    x = torch.arange(4.0)
    ok, out = run(mutating, capsys, cases=[(x,)])
    assert not ok and "values differ" in out
    assert torch.equal(x, torch.arange(4.0))


def test_strict_raises_and_env_default(capsys, monkeypatch):
    with pytest.raises(AssertionError, match="not implemented"):
        check_function(lambda x: (_ for _ in ()).throw(NotImplementedError()), softmax_ref,
                       [torch.ones(2)], "softmax", strict=True)
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "1")
    assert strict_default()
    with pytest.raises(AssertionError):
        check_function(lambda x: x, softmax_ref, [torch.ones(2)], "softmax")
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    assert not strict_default()
    assert check_function(lambda x: x, softmax_ref, [torch.ones(2)], "softmax") is False
    # strict never turns a pass into a failure
    assert check_function(softmax_ref, softmax_ref, [torch.ones(2)], "softmax", strict=True)


def test_broken_reference_is_not_blamed_on_the_learner():
    def ref(x):
        raise ValueError("bug in the course")

    with pytest.raises(RuntimeError, match="reference solution of 'f' failed"):
        check_function(lambda x: x, ref, [1], "f", strict=False)


def test_case_forms_and_nested_results(capsys):
    def ref(a, b=1):
        return {"sum": a + b, "pair": (np.array([a, b]), int(a))}

    cases = [(1,), {"a": 2, "b": 3}, 4, case(5, b=6, label="kw")]
    assert check_function(ref, ref, cases, "nested", strict=False)

    def wrong(a, b=1):
        r = ref(a, b)
        r["pair"] = (r["pair"][0], float(a))
        return r

    ok = check_function(wrong, ref, cases, "nested", strict=False)
    out = capsys.readouterr().out
    assert not ok and "expected an integer in ['pair'][1]" in out


def test_no_cases_is_an_error():
    with pytest.raises(ValueError, match="no cases"):
        check_function(len, len, [], "len")


def test_check_value(capsys):
    assert check_value(0.5000001, 0.5, "share", strict=False)
    assert not check_value(np.array([1, 2]), np.array([1, 3]), "ids", strict=False)
    assert "1 of 2 entries differ" in capsys.readouterr().out
    assert not check_value("les", "le", "word", strict=False)


def test_use_solution(capsys):
    def mine():
        raise NotImplementedError

    assert use_solution(mine, softmax_ref, True) is softmax_ref
    assert "reference solution for mine()" in capsys.readouterr().out
    assert use_solution(mine, softmax_ref, False) is mine


def test_check_function_settings_as_options_or_keywords(capsys):
    """check_function's settings (CheckOptions): the object and the keywords are the same call;
    an unknown keyword is a TypeError naming the function."""
    from ctxmix_lite.exercises import CheckOptions

    def close(x, dim=-1):
        return torch.softmax(x, dim=dim) + 1e-3

    kw = dict(atol=1e-2, rtol=0.0, strict=False, hints="look at the softmax")
    assert check_function(close, softmax_ref, CASES, "softmax", **kw) is True
    assert check_function(close, softmax_ref, CASES, "softmax", options=CheckOptions(**kw)) is True
    tight = dict(kw, atol=1e-4)
    capsys.readouterr()
    assert check_function(close, softmax_ref, CASES, "softmax", **tight) is False
    out_kw = capsys.readouterr().out
    assert check_function(close, softmax_ref, CASES, "softmax", options=CheckOptions(**tight)) is False
    assert capsys.readouterr().out == out_kw and "look at the softmax" in out_kw
    # keywords beside an object override its fields
    assert check_function(close, softmax_ref, CASES, "softmax", options=CheckOptions(**tight), atol=1e-2) is True
    with pytest.raises(TypeError, match="check_function.*tolerance"):
        check_function(close, softmax_ref, CASES, "softmax", tolerance=1e-2)
