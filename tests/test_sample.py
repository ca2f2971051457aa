import subprocess
import sys

import numpy as np
import pytest

import conftest
from PIL import Image

from dmz.config import resolve
from dmz.trainer import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(resolve("digits", conftest.tiny_overrides()), out, progress=False)
    return out


def _sample(*args):
    return subprocess.run([sys.executable, "-m", "dmz.sample", *args], capture_output=True, text=True, timeout=300)


def test_npz_holds_uint8_nhwc_and_png_is_a_grid(tiny_run, tmp_path):
    r = _sample("--run", str(tiny_run), "--steps", "4", "--num", "6", "--z", "dataset", "--out", str(tmp_path / "s.npz"))
    assert r.returncode == 0, r.stderr
    arr = np.load(tmp_path / "s.npz")["arr_0"]
    assert arr.shape == (6, 16, 16, 1) and arr.dtype == np.uint8
    r = _sample("--run", str(tiny_run), "--steps", "4", "--num", "4", "--out", str(tmp_path / "g.png"))
    assert r.returncode == 0, r.stderr
    img = Image.open(tmp_path / "g.png")
    assert img.size == (2 * 16 + 3, 2 * 16 + 3)  # 2x2 grid with 1-pixel padding


def test_same_seed_same_images_other_seed_differs(tiny_run, tmp_path):
    for name, seed in [("a", 0), ("b", 0), ("c", 5)]:
        r = _sample("--run", str(tiny_run), "--steps", "3", "--num", "3", "--seed", str(seed),
                    "--out", str(tmp_path / f"{name}.npz"))
        assert r.returncode == 0, r.stderr
    a, b, c = (np.load(tmp_path / f"{n}.npz")["arr_0"] for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sample_cli_errors(tiny_run, tmp_path):
    r = _sample("--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "not a run folder" in r.stderr
    r = _sample("--run", str(tiny_run), "--z", "magic", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "unknown z-sampler 'magic'" in r.stderr
    r = _sample("--run", str(tiny_run), "--out", str(tmp_path / "x.jpg"))
    assert r.returncode == 2 and ".png or .npz" in r.stderr


def test_sampling_precision_and_compile_options(tiny_run):
    """bf16 autocast and the compiled denoiser give the eager fp32 images up to their arithmetic (same seeds, same
    z, same x_T), and the run's config fields are the defaults an explicit argument overrides."""
    import torch

    from dmz.accel import bf16_supported
    from dmz.run import load_run
    from dmz.sampling import generate, sampling_setup

    run = load_run(tiny_run, device="cpu")
    assert sampling_setup(run) == (None, False)  # the run's config (tiny: compile off)
    assert sampling_setup(run, compile=True) == (None, True) and resolve("digits").train.sampling_compile
    kw = dict(steps=3, seeds=range(6), micro_batch=4)
    ref = generate(run, **kw)
    assert torch.equal(ref, generate(run, precision="fp32", compile=False, **kw))
    if bf16_supported(torch.device("cpu")):
        bf = generate(run, precision="bf16", **kw)
        assert not torch.equal(bf, ref)  # bf16 arithmetic really ran
        assert (bf - ref).abs().mean() < 0.05


@pytest.mark.slow  # ~1 min: inductor compiles the tiny UNet from a cold cache
def test_compiled_denoiser_gives_the_eager_images(tiny_run):
    import torch

    from dmz.run import load_run
    from dmz.sampling import generate

    run = load_run(tiny_run, device="cpu")
    kw = dict(steps=3, seeds=range(6), micro_batch=4)
    torch.testing.assert_close(generate(run, compile=True, **kw), generate(run, **kw), rtol=0, atol=2e-3)


def test_generate_from_noised_x0_is_q_sample_then_the_last_k_steps(tiny_run):
    """The applications decode through generate(x0=..., start_step=k): row i's x0 is noised to respaced step k-1 with
    the first draw of sample i's generator (where x_T would be), then k ancestral steps with the same generator."""
    import torch

    from dmz.diffusion import PerSampleRNG
    from dmz.model import build_diffusion
    from dmz.run import load_run
    from dmz.accel import MicroBatched, default_micro_batch
    from dmz.sampling import generate

    run = load_run(tiny_run)
    n, T, k = 3, 10, 9
    g = torch.Generator().manual_seed(0)
    shape = (run.model.channels, run.model.resolution, run.model.resolution)
    x0 = torch.rand(n, *shape, generator=g) * 2 - 1
    codes = None  # z from the prior z-sampler, seeded per sample as generate does
    seeds = [5, 6, 7]
    got = generate(run, steps=T, seeds=seeds, x0=x0, start_step=k, codes=codes, precision="fp32", compile=False)
    # by hand
    diffusion = build_diffusion(run.cfg, timestep_respacing=str(T))
    rng = PerSampleRNG([2 * s for s in seeds])
    if codes is None:
        from dmz.zsamplers import build_zsampler

        codes = build_zsampler("prior", run).sample(n, PerSampleRNG([2 * s + 1 for s in seeds]), "cpu")
    cond = run.model.latent.code_to_cond(codes)
    x = diffusion.q_sample(x0, torch.full((n,), k - 1, dtype=torch.long), noise=rng.randn(*shape))
    with torch.no_grad():
        for i in reversed(range(k)):
            x = diffusion.p_sample(MicroBatched(run.model, default_micro_batch(run.device)), x,
                                   torch.full((n,), i, dtype=torch.long),
                                   {} if cond is None else {"cond": cond}, rng=rng)["sample"]
    assert torch.equal(got, x.float().clamp(-1, 1))
    with pytest.raises(ValueError, match="x0 and start_step go together"):
        generate(run, steps=T, seeds=seeds, x0=x0)
