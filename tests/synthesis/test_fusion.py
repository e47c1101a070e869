"""ALF / FLF / CLF generators: shapes, padding masks, and float64 agreement with the paper's equations."""
import math

import pytest
import torch
from torch.nn import functional as F

from zsdet.synthesis import CrossLevelFusion, LabelSets, MultiLabelGenerator, index_label_sets
from zsdet.synthesis.networks import PAIR_ROW_MULTIPLE

C, A, D, NZ, H = 7, 5, 12, 5, 3


def make_generator(fusion, dtype=torch.float64, act="sigmoid", seed=0):
    torch.manual_seed(seed)
    emb = F.normalize(torch.randn(C, A), dim=1)
    g = MultiLabelGenerator(fusion, emb, D, NZ, hidden=9, heads=H, ff_hidden=11, dropout=0.0, out_act=act)
    with torch.no_grad():  # N(0, 0.02) init makes everything ~0.5 after the sigmoid; spread it out
        for p in g.parameters():
            p.normal_(0, 0.5)
    return g.to(dtype).eval()


SETS = [[0], [1, 3, 6], [2, 5], [4, 0, 1, 2]]


def index(sets=SETS):
    return index_label_sets(LabelSets.from_lists(sets, C), C)


@pytest.mark.parametrize("fusion", ["alf", "flf", "clf"])
def test_shapes_and_padding_is_ignored(fusion):
    g = make_generator(fusion)
    sets = LabelSets.from_lists(SETS, C)
    z = torch.randn(len(SETS), NZ, dtype=torch.float64)
    out = g(z, index_label_sets(sets, C))
    assert out.shape == (len(SETS), D) and out.dtype == torch.float64
    assert bool(((out > 0) & (out < 1)).all())  # sigmoid output
    # garbage in the padded slots and extra padding columns must not change anything
    idx = torch.cat([sets.idx, torch.zeros(len(SETS), 2, dtype=torch.long)], 1)
    mask = torch.cat([sets.mask, torch.zeros(len(SETS), 2, dtype=torch.bool)], 1)
    idx = torch.where(mask, idx, torch.full_like(idx, 5))
    torch.testing.assert_close(g(z, index_label_sets(LabelSets(idx, mask), C)), out, rtol=0, atol=0)
    # each sample depends on its own set only: the result for a set does not depend on the batch
    torch.testing.assert_close(g(z[1:2], index([SETS[1]])), out[1:2], rtol=1e-12, atol=1e-12)


def naive_generator_output(gen, z, e):
    """G(z, e) written out: the first layer over the concatenation [z; e], as the paper / official code."""
    h = F.leaky_relu(torch.cat([z, e]) @ gen.fc1.weight.T + gen.fc1.bias, 0.2)
    return torch.sigmoid(h @ gen.fc_out.weight.T + gen.fc_out.bias)


def test_vectorised_flf_equals_per_label_loop():
    g = make_generator("flf")
    z = torch.randn(len(SETS), NZ, dtype=torch.float64)
    expected = torch.stack([
        torch.stack([naive_generator_output(g.g_f, z[b], g.class_embeddings[j]) for j in labels]).mean(0)
        for b, labels in enumerate(SETS)])
    rows = []
    g.g_f.fc1.register_forward_hook(lambda m, inputs, out: rows.append(len(inputs[0])))
    torch.testing.assert_close(g(z, index()), expected, rtol=1e-12, atol=1e-12)
    # the pair rows are padded to a multiple of PAIR_ROW_MULTIPLE (repeating GEMM shapes); padding is dropped
    assert rows == [PAIR_ROW_MULTIPLE] and sum(map(len, SETS)) < PAIR_ROW_MULTIPLE


def test_alf_uses_mean_embedding():
    g = make_generator("alf")
    z = torch.randn(len(SETS), NZ, dtype=torch.float64)
    expected = torch.stack([naive_generator_output(g.g_a, z[b], g.class_embeddings[labels].mean(0))
                            for b, labels in enumerate(SETS)])
    torch.testing.assert_close(g(z, index()), expected, rtol=1e-12, atol=1e-12)


def direct_clf(block: CrossLevelFusion, x_f, x_a):
    """Eqs. 3-5 for one sample, head by head, exactly as written in the paper."""
    x = torch.stack([x_f, x_a])  # (2, d)
    d = x.shape[1]
    dh = d // block.heads
    wq, wk, wv = block.qkv.weight[:d].T, block.qkv.weight[d:2 * d].T, block.qkv.weight[2 * d:].T  # (d, d)
    alphas = []
    for h in range(block.heads):
        cols = slice(h * dh, (h + 1) * dh)
        q, k, v = x @ wq[:, cols], x @ wk[:, cols], x @ wv[:, cols]  # (2, d')
        r = torch.softmax(q @ k.T / math.sqrt(dh), dim=1)  # (2, 2) over the keys
        alphas.append(r @ v)
    o = torch.cat(alphas, 1) @ block.out.weight.T  # eq. 3
    s = x + o
    f = F.leaky_relu(s @ block.ff1.weight.T + block.ff1.bias, 0.2) @ block.ff2.weight.T + block.ff2.bias
    return (f + s).mean(0)  # eqs. 4-5


def test_clf_block_equals_direct_equations():
    g = make_generator("clf")
    x_f, x_a = torch.rand(4, D, dtype=torch.float64), torch.rand(4, D, dtype=torch.float64)
    expected = torch.stack([direct_clf(g.fuse, x_f[b], x_a[b]) for b in range(4)])
    torch.testing.assert_close(g.fuse(x_f, x_a), expected, rtol=1e-12, atol=1e-12)
    # and the whole CLF generator = act(block(FLF, ALF))
    z = torch.randn(len(SETS), NZ, dtype=torch.float64)
    sets = index()
    full = torch.sigmoid(g.fuse(g.flf(z, sets), g.alf(z, g.mean_embedding(sets))))
    torch.testing.assert_close(g(z, sets), full, rtol=1e-12, atol=1e-12)


def test_clf_attention_mixes_the_two_levels():
    """The fused output depends on both x_f and x_a through the attention (not only the residual)."""
    g = make_generator("clf")
    x_f, x_a = torch.rand(1, D, dtype=torch.float64), torch.rand(1, D, dtype=torch.float64)
    base = g.fuse(x_f, x_a)
    assert not torch.allclose(g.fuse(x_f, x_a + 0.1), base)
    assert not torch.allclose(g.fuse(x_f + 0.1, x_a), base)


def test_same_noise_across_labels_of_a_set():
    """FLF: a set {j} and a set {j, j'} share G_f(z, e_j) when z is the same (eq. 2)."""
    g = make_generator("flf")
    z = torch.randn(1, NZ, dtype=torch.float64).repeat(3, 1)
    out = g(z, index([[1], [4], [1, 4]]))
    torch.testing.assert_close(out[2], (out[0] + out[1]) / 2, rtol=1e-12, atol=1e-12)


def test_missing_embedding_row_is_a_clear_error():
    with pytest.raises(KeyError, match="class id 9.*7 rows"):
        index_label_sets(LabelSets.from_lists([[1, 9]], 10), C)


def test_feature_dim_must_divide_heads():
    with pytest.raises(ValueError, match="CLF_HEADS"):
        MultiLabelGenerator("clf", torch.randn(C, A), 10, NZ, hidden=4, heads=3)


def test_unknown_fusion():
    with pytest.raises(ValueError, match="SYNTHESIS.FUSION"):
        MultiLabelGenerator("mean", torch.randn(C, A), D, NZ, hidden=4)


def test_clf_pre_activation_identity_init_starts_as_mean_of_branches():
    """CLF_INPUT pre_activation + CLF_INIT identity: at initialisation the generator is
    act((mean_j G_f(z, e_j) + G_a(z, e_mu)) / 2), one activation on the fused pre-activations."""
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(C, A), dim=1)
    g = MultiLabelGenerator("clf", emb, D, NZ, hidden=9, heads=H, ff_hidden=11, out_act="sigmoid",
                            clf_input="pre_activation", clf_init="identity").double().eval()
    assert bool((g.fuse.out.weight == 0).all()) and bool((g.fuse.ff2.weight == 0).all())
    z, sets = torch.randn(len(SETS), NZ, dtype=torch.float64), index()
    pairs = g.g_f.forward_pairs(z, g.class_embeddings, sets.pair_set, sets.pair_class)
    x_f = torch.zeros(len(SETS), D, dtype=torch.float64).index_add_(0, sets.pair_set, pairs) / sets.sizes[:, None]
    x_a = g.g_a(z, g.mean_embedding(sets))
    expected = torch.sigmoid((x_f + x_a) / 2 + g.fuse.ff2.bias)
    torch.testing.assert_close(g(z, sets), expected, rtol=1e-12, atol=1e-12)


def test_clf_separate_branch_noise():
    """CLF_BRANCH_NOISE separate: z has 2 nz columns, the first half drives G_f, the second G_a."""
    g = make_generator("clf")
    g.branch_noise = "separate"
    assert g.input_noise_dim == 2 * NZ
    z_f, z_a, sets = torch.randn(len(SETS), NZ, dtype=torch.float64), torch.randn(len(SETS), NZ, dtype=torch.float64), index()
    expected = torch.sigmoid(g.fuse(g.flf(z_f, sets), g.alf(z_a, g.mean_embedding(sets))))
    torch.testing.assert_close(g(torch.cat([z_f, z_a], 1), sets), expected, rtol=1e-12, atol=1e-12)


def test_clamp_activation_gives_exact_zeros_and_bounds():
    g = make_generator("alf", act="clamp")
    out = g(torch.randn(64, NZ, dtype=torch.float64), index([[i % C] for i in range(64)]))
    assert bool((out >= 0).all() and (out <= 1).all())
    assert bool((out == 0).any()) and bool((out == 1).any())  # both bounds are reached (weights ~N(0, 0.5))


@pytest.mark.parametrize("key,value", [("clf_input", "logits"), ("clf_init", "zeros"), ("branch_noise", "one")])
def test_unknown_clf_options_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"SYNTHESIS.{'CLF_BRANCH_NOISE' if key == 'branch_noise' else key.upper()}"):
        MultiLabelGenerator("clf", torch.randn(C, A), D, NZ, hidden=4, heads=H, **{key: value})


def test_sparse_sigmoid_activation():
    from zsdet.synthesis.networks import SPARSE_MARGIN, output_activation
    h = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0], dtype=torch.float64)
    out = output_activation(h, "sparse_sigmoid")
    expected = ((1 + 2 * SPARSE_MARGIN) * torch.sigmoid(h) - SPARSE_MARGIN).clamp(0, 1)
    torch.testing.assert_close(out, expected)
    assert out[0] == 0 and out[-1] == 1 and out[2] == pytest.approx(0.5) and 0 < out[1] < out[3] < 1
