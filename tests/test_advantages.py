import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e3core import group_advantages, group_loss_weights
from e3core.advantages import group_codes


def loop_reference(rewards, groups, baseline="mean", scale="std", eps=1e-6, clip=None):
    members = {}
    for j, g in enumerate(groups):
        members.setdefault(g, []).append(j)
    out = [0.0] * len(rewards)
    for idx in members.values():
        vals = [rewards[j] for j in idx]
        n = len(vals)
        if n == 1 or max(vals) == min(vals):
            continue
        mean = sum(vals) / n
        std = statistics.stdev(vals)
        for j in idx:
            base = mean if baseline == "mean" else (sum(vals) - rewards[j]) / (n - 1)
            a = rewards[j] - base
            if scale == "std":
                a /= std + eps
            if clip is not None:
                a = max(-clip, min(clip, a))
            out[j] = a
    return out


@st.composite
def grouped(draw):
    sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=12))
    labels = draw(st.permutations(list(range(len(sizes)))))
    offset = draw(st.sampled_from([0, 7, 10**9, -5]))
    groups = [labels[g] + offset for g, n in enumerate(sizes) for _ in range(n)]
    rewards = draw(
        st.lists(
            st.sampled_from([0.0, 1.0]) | st.floats(-10, 10, allow_nan=False),
            min_size=len(groups),
            max_size=len(groups),
        )
    )
    order = draw(st.permutations(list(range(len(groups)))))
    return [rewards[i] for i in order], [groups[i] for i in order]


options = st.fixed_dictionaries(
    {
        "baseline": st.sampled_from(["mean", "leave_one_out"]),
        "scale": st.sampled_from(["std", "none"]),
        "eps": st.sampled_from([0.0, 1e-6, 1e-4]),
        "clip": st.none() | st.floats(0.5, 5.0),
    }
)


@given(data=grouped(), opts=options)
def test_matches_loop_reference_numpy_and_torch(data, opts):
    rewards, groups = data
    if opts["eps"] == 0.0 and opts["scale"] == "std":
        opts = {**opts, "eps": 1e-6}
    ref = loop_reference(rewards, groups, **opts)
    got_np = group_advantages(np.array(rewards), np.array(groups), **opts)
    got_t = group_advantages(
        torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups), **opts
    )
    np.testing.assert_allclose(got_np, ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_t.numpy(), ref, rtol=1e-9, atol=1e-9)


@given(data=grouped())
def test_string_labels_like_verl_uids(data):
    rewards, groups = data
    labels = np.array([f"uid-{g}" for g in groups], dtype=object)
    np.testing.assert_allclose(
        group_advantages(np.array(rewards), labels),
        group_advantages(np.array(rewards), np.array(groups)),
    )


label_texts = st.text(st.characters(codec="utf-8"), max_size=12)
"""Labels of mixed lengths, unicode (also astral), empty and NUL-ended strings."""


@st.composite
def labelled(draw):
    """Rewards, distinct labels of one kind, and integer codes drawn with repeats."""
    kind = draw(st.sampled_from(["str", "bytes", "int", "str array", "bytes array"]))
    if kind.startswith("str"):
        distinct = draw(st.lists(label_texts, min_size=1, max_size=8, unique=True))
    elif kind.startswith("bytes"):
        texts = draw(st.lists(label_texts, min_size=1, max_size=8, unique=True))
        distinct = list(dict.fromkeys(t.encode() for t in texts))
    else:
        distinct = draw(st.lists(st.integers(-(10**30), 10**30), min_size=1, unique=True))
    if kind.endswith("array"):  # numpy strips trailing NULs: keep only labels it keeps
        distinct = [d for d in distinct if not d.endswith(b"\0" if kind[0] == "b" else "\0")]
        distinct = distinct or (["x"] if kind[0] == "s" else [b"x"])
    n = draw(st.integers(1, 40))
    codes = draw(st.lists(st.integers(0, len(distinct) - 1), min_size=n, max_size=n))
    rewards = draw(st.lists(st.sampled_from([0.0, 1.0, 0.25]), min_size=n, max_size=n))
    labels = [distinct[c] for c in codes]
    if kind.endswith("array"):
        arr = np.array(labels)
        assert arr.dtype.kind in "US"
    else:
        arr = np.empty(n, dtype=object)
        arr[:] = labels
    return np.array(rewards), arr, np.array(codes)


@given(data=labelled(), opts=options)
def test_string_and_object_labels_equal_their_integer_codes(data, opts):
    rewards, labels, codes = data
    if opts["eps"] == 0.0 and opts["scale"] == "std":
        opts = {**opts, "eps": 1e-6}
    want = group_advantages(rewards, codes, **opts)
    np.testing.assert_array_equal(group_advantages(rewards, labels, **opts), want)
    if not isinstance(labels[0], int):  # np.asarray makes a list of huge ints float
        np.testing.assert_array_equal(group_advantages(rewards, labels.tolist(), **opts), want)
    got_t = group_advantages(torch.tensor(rewards), labels, **opts)
    np.testing.assert_array_equal(
        got_t.numpy(), group_advantages(torch.tensor(rewards), codes, **opts).numpy()
    )
    for mode in ("sample", "prompt"):
        np.testing.assert_array_equal(
            group_loss_weights(labels, mode), group_loss_weights(codes, mode)
        )
    # group_codes keeps np.unique's order: rank among the sorted distinct labels
    uniq, inverse = np.unique(labels, return_inverse=True)
    got, num = group_codes(labels)
    np.testing.assert_array_equal(got, inverse)
    assert num == len(uniq)
    assert got.dtype == np.int64 and got.flags.writeable


def test_uid_strings_as_distinct_objects_and_uuids():
    import uuid

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, 5000)
    uids = [str(uuid.UUID(int=int(g) * 7919)) for g in range(300)]
    labels = np.array(["".join(uids[g]) for g in groups], dtype=object)  # equal, not identical
    rewards = rng.random(5000).round(1)
    np.testing.assert_array_equal(
        group_advantages(rewards, labels), group_advantages(rewards, groups)
    )
    np.testing.assert_array_equal(group_codes(labels)[0], np.unique(labels, return_inverse=True)[1])


@pytest.mark.parametrize(
    "labels",
    [
        [True, False, True],  # bool objects: as np.unique
        [1.5, 2.5, 1.5],  # float objects
        [1, 2.0, 1.0],  # ints equal to floats
        [(1, 2), (3,), (1, 2)],  # tuples
        ["a", b"a", "a"],  # mixed: np.unique's TypeError
        ["a", 1, "a"],
    ],
)
def test_other_object_labels_are_handled_as_before(labels):
    arr = np.empty(len(labels), dtype=object)
    arr[:] = labels
    rewards = np.array([1.0, 0.0, 0.0])
    try:
        _, inverse = np.unique(arr, return_inverse=True)
    except TypeError:
        with pytest.raises(TypeError, match="comparable labels"):
            group_advantages(rewards, arr)
        with pytest.raises(TypeError, match="comparable labels"):
            group_codes(arr)
        return
    np.testing.assert_array_equal(group_codes(arr)[0], inverse.reshape(-1))
    np.testing.assert_array_equal(
        group_advantages(rewards, arr), group_advantages(rewards, inverse.reshape(-1))
    )


@given(data=grouped(), seed=st.integers(0, 1000))
def test_permutation_equivariant(data, seed):
    rewards, groups = data
    perm = np.random.default_rng(seed).permutation(len(rewards))
    r, g = np.array(rewards), np.array(groups)
    np.testing.assert_allclose(group_advantages(r[perm], g[perm]), group_advantages(r, g)[perm])


@given(
    n_groups=st.integers(1, 20),
    size=st.integers(2, 16),
    seed=st.integers(0, 10_000),
    binary=st.booleans(),
)
def test_equals_trl_fixed_group_result(n_groups, size, seed, binary):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2, n_groups * size) if binary else rng.normal(size=n_groups * size)
    rewards = torch.tensor(raw, dtype=torch.float32)
    grouped_view = rewards.view(-1, size)
    mean = grouped_view.mean(dim=1).repeat_interleave(size)
    std = grouped_view.std(dim=1).repeat_interleave(size)
    trl = (rewards - mean) / (std + 1e-4)
    ids = torch.arange(n_groups).repeat_interleave(size)
    ours = group_advantages(rewards, ids, eps=1e-4)
    torch.testing.assert_close(ours, trl, rtol=1e-5, atol=1e-5)


def verl_loop(scores, index, eps=1e-6):
    """verl's grpo outcome advantage, as a per-sample Python loop."""
    id2score = {}
    for s, i in zip(scores, index):
        id2score.setdefault(i, []).append(s)
    stats_ = {}
    for i, vals in id2score.items():
        if len(vals) == 1:
            stats_[i] = (0.0, 1.0)
        else:
            t = torch.tensor(vals, dtype=torch.float64)
            stats_[i] = (float(t.mean()), float(t.std()))
    return [(s - stats_[i][0]) / (stats_[i][1] + eps) for s, i in zip(scores, index)]


@given(data=grouped())
def test_equals_verl_where_both_are_defined(data):
    rewards, groups = data
    ours = group_advantages(np.array(rewards), np.array(groups))
    ref = verl_loop(rewards, groups)
    counts = {g: groups.count(g) for g in groups}
    for j, g in enumerate(groups):
        if counts[g] > 1:
            assert ours[j] == pytest.approx(ref[j], abs=1e-6)
        else:
            assert ours[j] == 0.0  # verl passes the raw reward through; we give 0


def test_flat_and_single_groups_are_exactly_zero():
    rewards = np.array([0.1, 0.1, 0.1, 0.7, 3.0, 3.0])
    groups = np.array([0, 0, 0, 1, 2, 2])
    out = group_advantages(rewards, groups)
    assert (out == 0.0).all()
    assert (group_advantages(torch.tensor(rewards), torch.tensor(groups)) == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_torch_type_dtype_shape_preserved(dtype):
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=dtype, requires_grad=False)
    out = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == dtype and out.shape == rewards.shape and out.device == rewards.device
    ref = loop_reference([1.0, 0.0, 1.0, 1.0, 0.0], [0, 0, 0, 1, 1])
    tol = 1e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-6
    np.testing.assert_allclose(out.float().numpy(), ref, rtol=tol, atol=tol)


def test_numpy_float32_and_group_ids_as_list():
    out = group_advantages(np.array([1, 0, 0, 1], dtype=np.float32), [5, 5, 9, 9])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


def test_rewards_with_grad_are_detached():
    rewards = torch.tensor([1.0, 0.0], requires_grad=True)
    assert not group_advantages(rewards, torch.tensor([0, 0])).requires_grad


def test_lone_success_clip():
    rewards = np.zeros(93)
    rewards[0] = 1.0
    out = group_advantages(rewards, np.zeros(93, dtype=int))
    assert out[0] == pytest.approx((92 / 93) / (1 / math.sqrt(93) + 1e-6), rel=1e-9)  # ~sqrt(n)
    assert group_advantages(rewards, np.zeros(93, dtype=int), clip=5.0)[0] == 5.0


@pytest.mark.parametrize(
    ("rewards", "groups", "kwargs", "exc", "match"),
    [
        (np.array([1.0, np.nan]), [0, 0], {}, ValueError, "rewards must be finite"),
        (torch.tensor([1.0, math.inf]), [0, 0], {}, ValueError, "rewards must be finite"),
        (np.array([1, 0]), [0, 0], {}, TypeError, "floating-point"),
        (torch.tensor([1, 0]), [0, 0], {}, TypeError, "floating-point"),
        (np.zeros((2, 2)), [0, 0], {}, ValueError, "one-dimensional"),
        (np.zeros(3), [0, 0], {}, ValueError, "length of rewards"),
        (torch.zeros(3), torch.tensor([0, 0]), {}, ValueError, "length of rewards"),
        (np.zeros(2), [0.5, 1.5], {}, TypeError, "floats"),
        (
            torch.zeros(2),
            torch.tensor([0.0, 1.0]),
            {},
            TypeError,
            r"integer \(or bool\) tensor, got torch.float32",
        ),
        (np.zeros(2), [0, 0], {"baseline": "median"}, ValueError, "baseline must be one of"),
        (np.zeros(2), [0, 0], {"scale": "mad"}, ValueError, "scale must be one of"),
        (np.zeros(2), [0, 0], {"eps": -1.0}, ValueError, "eps must be >= 0"),
        (np.zeros(2), [0, 0], {"clip": 0.0}, ValueError, "clip must be > 0"),
        ([1.0, 0.0], [0, 0], {}, TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_inputs(rewards, groups, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        group_advantages(rewards, groups, **kwargs)


@given(sizes=st.lists(st.integers(1, 10), min_size=1, max_size=15))
def test_prompt_weights_make_every_prompt_weigh_the_same(sizes):
    groups = np.repeat(np.arange(len(sizes)), sizes)
    n = len(groups)
    w = group_loss_weights(groups, "prompt")
    per_prompt = np.bincount(groups, weights=w)
    np.testing.assert_allclose(per_prompt, n / len(sizes))
    assert w.mean() == pytest.approx(1.0)
    wt = group_loss_weights(torch.tensor(groups), "prompt")
    assert wt.dtype == torch.float32
    np.testing.assert_allclose(wt.numpy(), w, rtol=1e-6)
    np.testing.assert_array_equal(group_loss_weights(groups, "sample"), np.ones(n))


def test_loss_weights_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        group_loss_weights([0, 1], "token")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU-only test)")
def test_cuda_tensors_match_cpu():
    rewards = torch.rand(10_000)
    groups = torch.randint(0, 700, (10_000,))
    cpu = group_advantages(rewards, groups)
    gpu = group_advantages(rewards.cuda(), groups.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
