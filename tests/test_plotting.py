"""ctxmix_lite.plotting: what is drawn is where it should be (times in seconds, labels, values)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ctxmix_lite import plotting  # noqa: E402

SR = 16000
ALIGN = [{"start": 0.10, "end": 0.35, "word": "les"},
         {"start": 0.35, "end": 0.80, "word": "livres"},
         {"start": 0.90, "end": 1.20, "word": "tombent"}]


@pytest.fixture
def tone():
    t = np.arange(int(1.5 * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _vlines_x(ax):
    xs = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if x.size == 2 and x[0] == x[1]:
            xs.append(float(x[0]))
    return sorted(set(xs))


def test_waveform_words(tone):
    ax = plotting.plot_waveform_words(tone, SR, ALIGN, title="t")
    assert ax.get_xlim() == pytest.approx((0, 1.5))
    assert ax.get_xlabel() == "Time (s)" and ax.get_ylabel() == "Amplitude"
    assert _vlines_x(ax) == pytest.approx([0.10, 0.35, 0.80, 0.90, 1.20])
    labels = {t.get_text(): t.get_position()[0] for t in ax.texts}
    assert labels == pytest.approx({"les": 0.225, "livres": 0.575, "tombent": 1.05})
    # the waveform itself: x in seconds, same samples
    wave = ax.get_lines()[0]
    assert wave.get_xdata()[-1] == pytest.approx((tone.size - 1) / SR)
    np.testing.assert_allclose(wave.get_ydata(), tone, atol=1e-7)


def test_spectrogram_words(tone):
    fig, ax = plt.subplots()
    out = plotting.plot_spectrogram_words(tone, SR, ALIGN, ax=ax)
    assert out is ax
    assert ax.get_xlim() == pytest.approx((0, 1.5))
    assert ax.get_xlabel() == "Time (s)" and "Hz" in ax.get_ylabel()
    assert [t.get_text() for t in ax.texts] == ["les", "livres", "tombent"]
    assert _vlines_x(ax) == pytest.approx([0.10, 0.35, 0.80, 0.90, 1.20])
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "Power (dB)"  # colour bar


def test_mel_spectrogram_finds_the_tone(tone):
    S = plotting.mel_spectrogram_db(tone, SR)
    assert S.shape[0] == 80 and S.shape[1] == 1 + tone.size // 160  # 10 ms hop, centred frames
    assert S.max() == pytest.approx(0.0)
    import librosa

    mel_f = librosa.mel_frequencies(n_mels=80, fmax=8000)
    peak_band = int(np.argmax(S[:, S.shape[1] // 2]))
    assert abs(mel_f[peak_band] - 440) < 60


def test_alignment_formats_and_errors(tone):
    tuples = [(0.1, 0.3, "a"), (0.3, 0.5, "b")]

    class W:
        def __init__(self, s, e, w):
            self.start, self.end, self.word = s, e, w

    assert plotting.normalize_alignment(tuples) == [(0.1, 0.3, "a"), (0.3, 0.5, "b")]
    assert plotting.normalize_alignment([W(0.1, 0.3, "a")]) == [(0.1, 0.3, "a")]
    assert plotting.normalize_alignment(None) == []
    with pytest.raises(ValueError, match="invalid times"):
        plotting.normalize_alignment([{"start": 0.5, "end": 0.2, "word": "x"}])
    with pytest.raises(ValueError, match="lacks key"):
        plotting.normalize_alignment([{"start": 0.5, "word": "x"}])
    with pytest.raises(ValueError, match="1-D"):
        plotting.plot_waveform_words(np.zeros((2, 100)), SR, [])
    with pytest.raises(ValueError, match="sampling rate"):
        plotting.plot_waveform_words(tone, 0, [])


def test_plot_matrix_labels_and_values():
    m = np.arange(6, dtype=float).reshape(2, 3)
    ax = plotting.plot_matrix(m, row_labels=["a", "b"], col_labels=["x", "y", "z"],
                              xlabel="key word", ylabel="query word", title="T",
                              colorbar_label="weight", annotate=True)
    np.testing.assert_array_equal(ax.images[0].get_array(), m)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("key word", "query word", "T")
    assert ax.figure.axes[1].get_ylabel() == "weight"
    assert sorted(t.get_text() for t in ax.texts) == ["0.00", "1.00", "2.00", "3.00", "4.00", "5.00"]


def test_plot_matrix_accepts_torch_and_checks_shapes():
    torch = pytest.importorskip("torch")
    ax = plotting.plot_matrix(torch.eye(3, requires_grad=True))
    np.testing.assert_array_equal(ax.images[0].get_array(), np.eye(3))
    with pytest.raises(ValueError, match="2-D"):
        plotting.plot_matrix(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="got 1 labels for 3"):
        plotting.plot_matrix(np.zeros((2, 3)), col_labels=["a"])


def test_mark_spans():
    ax = plotting.plot_matrix(np.random.default_rng(0).random((10, 10)))
    plotting.mark_spans(ax, [(0, 3), (4, 9)], labels=["le", "livre"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["le", "livre"]
    assert list(ax.get_xticks()) == [1.5, 6.5]
    with pytest.raises(ValueError, match="last < first"):
        plotting.mark_spans(ax, [(3, 1)])


def test_layer_heatmap_first_layer_at_bottom():
    vals = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    ax = plotting.plot_layer_heatmap(vals, ["Attention", "Attention-Norm", "Value Zeroing"],
                                     title="cue -> target")
    img = ax.images[0]
    assert img.origin == "lower"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2"]
    assert ax.get_ylabel() == "Layer"
    # the text in the cell of (layer 2, Value Zeroing) says 0.60
    cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cell[(1, 2)] == "0.60" and cell[(0, 0)] == "0.10"


def test_layer_names_one_convention():
    assert plotting.layer_label(0) == "layer 1"
    assert plotting.layer_label(5, "encoder") == "encoder layer 6"
    assert plotting.layer_options(3) == [("layer 1", 0), ("layer 2", 1), ("layer 3", 2)]
    assert plotting.state_label(0) == "input (0)"
    assert plotting.state_label(6) == "layer 6"  # hidden state 6 = the output of layer 6
    with pytest.raises(ValueError):
        plotting.layer_label(-1)
    with pytest.raises(ValueError):
        plotting.state_label(-1)
    with pytest.raises(ValueError):
        plotting.layer_options(0)


def _drawn(ax):
    """What a heatmap shows: image values, colour map and range, labels, title, colour bar, cell texts."""
    img = ax.images[0]
    return (np.asarray(img.get_array()).tolist(), img.get_cmap().name, img.norm.vmin, img.norm.vmax, img.origin,
            ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), ax.figure.axes[1].get_ylabel(),
            sorted(t.get_text() for t in ax.texts))


def test_heatmap_options_objects_equal_keywords():
    m = np.arange(6, dtype=float).reshape(2, 3)
    kw = dict(xlabel="k", ylabel="q", title="T", cmap="magma", colorbar_label="w", vmin=0.0, vmax=9.0,
              annotate=True, fmt="{:.1f}")
    a = plotting.plot_matrix(m, ax=plt.figure().add_subplot(), **kw)
    b = plotting.plot_matrix(m, ax=plt.figure().add_subplot(), options=plotting.MatrixStyle(**kw))
    assert _drawn(a) == _drawn(b) and _drawn(a)[1] == "magma" and "5.0" in _drawn(a)[-1]
    # keywords beside an options object override its fields
    c = plotting.plot_matrix(m, ax=plt.figure().add_subplot(), options=plotting.MatrixStyle(**kw), cmap="Blues")
    assert _drawn(c)[1] == "Blues"
    # the layer heatmap: the same style fields, its own defaults
    d = plotting.plot_layer_heatmap(m, ["a", "b", "c"], ax=plt.figure().add_subplot(), title="L")
    e = plotting.plot_layer_heatmap(m, ["a", "b", "c"], ax=plt.figure().add_subplot(),
                                    options=plotting.LayerHeatmapStyle(title="L"))
    assert _drawn(d) == _drawn(e)
    assert _drawn(d)[1] == "Blues" and _drawn(d)[4] == "lower" and len(_drawn(d)[-1]) == 6
    assert plotting.LayerHeatmapStyle().ylabel == "Layer" and plotting.MatrixStyle().annotate is False


def test_spectrogram_options_object_equals_keywords(tone):
    a = plotting.plot_spectrogram_words(tone, SR, ALIGN, ax=plt.figure().add_subplot(), n_mels=40, colorbar=False,
                                        title="t")
    b = plotting.plot_spectrogram_words(tone, SR, ALIGN, ax=plt.figure().add_subplot(),
                                        options=plotting.SpectrogramSettings(n_mels=40, colorbar=False, title="t"))
    np.testing.assert_array_equal(a.collections[0].get_array(), b.collections[0].get_array())
    assert a.get_title() == b.get_title() == "t" and len(a.figure.axes) == 1


@pytest.mark.parametrize("fn, args", [
    ("plot_matrix", (np.eye(2),)),
    ("plot_layer_heatmap", (np.eye(2), ["a", "b"])),
    ("plot_spectrogram_words", (np.zeros(SR // 10), SR)),
])
def test_unknown_plot_setting_is_a_type_error_naming_the_function(fn, args):
    with pytest.raises(TypeError, match=rf"{fn}\(\) got unexpected keyword argument\(s\) \['colour_map'\]"):
        getattr(plotting, fn)(*args, colour_map="magma")
