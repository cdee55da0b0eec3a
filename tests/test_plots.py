"""Plot fixes (issue 14 item 4): distinct series styles, honest titles, overlays, series plots, column names."""

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex

from mmfuse import plots
from mmfuse.explain import plots as eplots


def _triples(ax):
    return [(to_hex(l.get_color()), l.get_linestyle(), str(l.get_marker())) for l in ax.get_lines()]


@pytest.mark.parametrize("n", [12, 30])
def test_learning_curves_series_have_distinct_styles_and_outside_legend(n):
    curves = {f"m{i:02d}": [[0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.07]] for i in range(n)}
    fig = plots.learning_curves_figure(curves, "val_accuracy", seeds=[0])
    ax = fig.axes[0]
    tr = _triples(ax)
    assert len(tr) == n and len(set(tr)) == n
    fig.canvas.draw()
    legend = ax.get_legend()
    assert len(legend.get_texts()) == n
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # to the right of the axes


def test_style_cycle_distinct_beyond_the_palette():
    for n in (40, 280, 300):
        st = plots.style_cycle(n)
        assert len({(s["color"], s["linestyle"], s["marker"]) for s in st}) == n


def test_title_and_band_say_what_was_averaged(tmp_path):
    one = plots.learning_curves_figure({"a": [[0.1, 0.2]], "b": [[0.3, 0.4]]}, "val_accuracy", seeds=[7])
    ax = one.axes[0]
    assert "single run (seed 7)" in ax.get_title() and "mean" not in ax.get_title()
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]

    runs = [[0.1, 0.2, 0.5], [0.3, 0.4, 0.6], [0.2, 0.9, 0.7]]
    three = plots.learning_curves_figure({"a": runs, "b": runs[:2] + [[0.0, 0.0, 0.0]]}, "val_accuracy",
                                         seeds=[0, 1, 2])
    ax = three.axes[0]
    assert "mean ± std over 3 seeds" in ax.get_title()
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    arr = np.array(runs)
    line = [l for l in ax.get_lines() if l.get_label() == "a"][0]
    np.testing.assert_allclose(line.get_ydata(), arr.mean(0))
    ys = bands[0].get_paths()[0].vertices[:, 1]
    lo, hi = arr.mean(0) - arr.std(0, ddof=1), arr.mean(0) + arr.std(0, ddof=1)
    assert ys.min() == pytest.approx(lo.min()) and ys.max() == pytest.approx(hi.max())
    assert plots.learning_curves({"a": runs}, tmp_path / "lc.png", seeds=[0, 1, 2]).stat().st_size > 0

    bar = plots.bar_chart_figure(["a", "b"], [0.5, 0.6], [0.1, 0.0], "accuracy", seeds=[3])
    assert "single run (seed 3)" in bar.axes[0].get_title()


def test_patch_heatmap_overlays_the_input():
    img = torch.zeros(1, 8, 8)
    img[0, 2:6, 3:5] = 1.0  # the "digit"
    vm = torch.zeros(8, 8)
    vm[:4, :4] = 0.3
    vm[4:, 4:] = -0.1
    fig = eplots.patch_heatmap_figure(img, vm, "t")
    ax = fig.axes[0]
    base, over = ax.images
    np.testing.assert_allclose(np.asarray(base.get_array()), img[0].numpy())  # the input first, in grey
    assert base.get_cmap().name == "gray"
    assert over.get_alpha() is not None and 0 < over.get_alpha() < 1
    vmin, vmax = over.get_clim()
    assert vmin == pytest.approx(-0.3) and vmax == pytest.approx(0.3)
    assert over.get_cmap()(0.5)[3] < 0.05  # φ = 0 is transparent: the digit shows through
    assert fig.axes[1].get_ylabel()  # the colour bar is labelled


@pytest.mark.parametrize("rate", [None, 100.0])
def test_series_plot_windows_have_axes_and_time_extent(rate):
    T, C, n = 40, 3, 8
    x = torch.randn(T, C, generator=torch.Generator().manual_seed(0))
    fmap = ((torch.arange(T) * n) // T).view(T, 1).expand(T, C)
    phi = torch.linspace(-1, 1, n).double()
    fig = eplots.series_contributions_figure(x, phi, fmap, "s", rate=rate)
    ax_s, ax_c = fig.axes
    assert ax_s.get_ylabel() and ax_c.get_ylabel() and ax_c.get_xlabel()
    assert ("(s)" in ax_c.get_xlabel()) == (rate is not None)
    dt = 1 / rate if rate else 1.0
    assert ax_c.get_xlim() == pytest.approx((0.0, T * dt))
    assert ax_s.get_shared_x_axes().joined(ax_s, ax_c)
    np.testing.assert_allclose(ax_s.get_lines()[0].get_ydata()[:T], x.mean(1).numpy(), rtol=1e-6, atol=1e-6)  # float32 means: a value near 0 has no 1e-6 relative precision
    assert ax_s.get_lines()[0].get_xdata()[-1] == pytest.approx(T * dt)
    heights = [p.get_height() for p in ax_c.patches]
    np.testing.assert_allclose(heights, phi.numpy())
    assert [p.get_width() for p in ax_c.patches] == pytest.approx([T / n * dt] * n)
    assert any(np.allclose(l.get_ydata(), 0) for l in ax_c.get_lines())  # the zero line


def test_series_plot_patches_spread_sums_to_total_phi():
    T, C = 12, 4
    fmap = (torch.arange(T).view(T, 1) // 6) * 2 + (torch.arange(C).view(1, C) // 2)  # 2x2 patches of 6x2
    phi = torch.tensor([0.4, -0.2, 0.1, 0.3], dtype=torch.float64)
    fig = eplots.series_contributions_figure(torch.randn(T, C), phi, fmap)
    ax_c = fig.axes[1]
    pos, neg, outline = (np.asarray(p.get_data().values) for p in ax_c.patches)
    dens = pos + neg
    np.testing.assert_allclose(outline, dens)
    assert (pos >= 0).all() and (neg <= 0).all()
    assert float(np.sum(dens)) == pytest.approx(float(phi.sum()))
    np.testing.assert_allclose(dens[:6], (0.4 - 0.2) / 6)
    assert ax_c.get_xlim() == pytest.approx((0, T))


def test_feature_labels_fallback_says_feature_i():
    labels, xlabel = eplots.feature_labels(3)
    assert labels == ["v0", "v1", "v2"] and "feature i" in xlabel
    labels, _ = eplots.feature_labels(2, torch.tensor([0, 0, 1]), ["a", "b", "c"])
    assert labels == ["a…b", "c"]


def test_example_bars_use_the_tables_column_names(tmp_path, monkeypatch):
    from mmfuse.datasets.table import load_table
    from mmfuse.explain import report

    rng = np.random.default_rng(0)
    rows = ["heart_rate,blood_pressure,age,label"] + [
        f"{a:.3f},{b:.3f},{c:.3f},{k % 2}" for k, (a, b, c) in enumerate(rng.normal(size=(20, 3)))]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    schema = {"table": str(tmp_path / "t.csv"), "target": {"column": "label"},
              "modalities": {"vitals": {"columns": ["heart_rate", "blood_pressure", "age"], "loader": "numeric"}}}
    test = load_table(schema, base_dir=tmp_path)["test"]
    w = torch.tensor([[1.0, -1.0], [0.5, 0.0], [0.0, 2.0]])

    def model(batch):
        return batch.inputs["vitals"] @ w

    seen = []
    real = report.plot_feature_bars
    monkeypatch.setattr(report, "plot_feature_bars",
                        lambda v, labels, path, title="", xlabel="": seen.append(list(labels)) or real(
                            v, labels, path, title, xlabel))
    report.explain_dataset(model, test, "mmshap", tmp_path / "ex", n_examples=1, n_permutations=2,
                           maskers={"vitals": "vector"})
    assert seen == [["heart_rate", "blood_pressure", "age"]]
    assert (tmp_path / "ex" / "examples" / "sample0_vitals.png").exists()


def test_tsne_constant_embedding_is_skipped_not_crashing(tmp_path):
    """A constant embedding (no spread) made sklearn's PCA init divide by zero and crash compare; the panel says so."""
    import numpy as np
    from mmfuse.plots import tsne_panels

    labels = np.arange(12) % 3
    emb = {"fused": np.ones((12, 4)), "image": np.random.RandomState(0).randn(12, 4)}
    path = tsne_panels(emb, labels, tmp_path / "t.png")
    assert path.exists() and path.stat().st_size > 1000


def test_learning_curve_epoch_ticks_are_integers():
    fig = plots.learning_curves_figure({"a": [[0.1, 0.2, 0.3]], "b": [[0.2, 0.25, 0.3]]}, seeds=[0])
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)  # the default locator puts ticks at 1.25, 1.5, ...


def test_bar_chart_long_labels_wrap_whole_and_stay_in_the_figure():
    long = "ensemble(fusion:late×0.60, fusion:concat×0.20, fusion:tensor×0.13, unimodal:audio×0.07)"
    names = ["fusion:late", "unimodal:audio", long]
    short = plots.bar_chart_figure(names[:2], [0.6, 0.5], [0.01, 0.02], seeds=[0, 1])
    fig = plots.bar_chart_figure(names, [0.6, 0.5, 0.7], [0.01, 0.02, 0.01], seeds=[0, 1])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert [" ".join(t.split("\n")) for t in labels] == names  # nothing cut off, only wrapped
    assert labels[2].count("\n") >= 3 and max(len(x) for x in labels[2].split("\n")) <= 27
    assert fig.get_figheight() > short.get_figheight()  # the figure grows with the labels
    fig.canvas.draw()
    box = fig.axes[0].get_xticklabels()[2].get_window_extent()
    W, Hh = fig.canvas.get_width_height()
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= W and box.y1 <= Hh
