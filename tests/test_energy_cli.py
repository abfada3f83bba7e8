import json


def test_energy_cli_full_data_finds_irrep_maxima_at_m_over_4(run_cli, tmp_path):
    code, out, err = run_cli("energy", "--group", "Z23", "--train-ratio", "1.0", "--restarts", "64", "--seed", "0",
                             "--json", "--out", tmp_path / "e")
    assert code == 0, err
    r = json.loads(out)
    assert r["irrep_fraction"] >= 0.9
    assert abs(r["max_energy"] - 5.75) / 5.75 < 1e-3 and r["predicted_max_energy"] == 5.75
    assert {"mean_energy", "memorization_fraction", "component_histogram"} <= r.keys()
    assert (tmp_path / "e" / "energy.png").stat().st_size > 0


def test_energy_cli_few_samples_lose_irrep_maxima(run_cli, tmp_path):
    code, out, _ = run_cli("energy", "--group", "Z23", "--train-ratio", "0.15", "--restarts", "32", "--json",
                           "--out", tmp_path / "e")
    r = json.loads(out)
    assert code == 0 and r["irrep_fraction"] < 0.5 and r["predicted_max_energy"] is None


def test_energy_cli_bad_input(run_cli, tmp_path):
    for args in (["--group", "nope"], ["--train-ratio", "2"], ["--activation", "tanh"], ["--restarts", "0"]):
        code, _, err = run_cli("energy", *args, "--out", tmp_path / "e")
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
