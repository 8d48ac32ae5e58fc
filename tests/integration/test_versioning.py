"""DVC versioning in a real git + DVC repository."""

import pytest
import yaml
from conftest import dvc

from llmrec.errors import VersioningError
from llmrec.versioning import version_data


def test_each_data_change_is_a_new_version_and_pushed(project, tmp_path):
    data = project / "data" / "synthetic" / "period1"
    data.mkdir(parents=True)
    (data / "news.tsv").write_text("N1\tsports\tfootball\tA title\t\t\t[]\t[]\n")
    v1 = version_data(project / "data" / "synthetic")
    assert v1.dvc_md5.endswith(".dir") and v1.nfiles == 1
    assert yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"] == v1.dvc_md5
    assert len(v1.git_revision) == 40
    assert v1.git_dirty  # data.dvc is new and not yet committed
    assert any((tmp_path / "dvc-remote").rglob("*")), "the snapshot was pushed to the default remote"

    (data / "news.tsv").write_text("N1\tsports\tfootball\tAnother title\t\t\t[]\t[]\n")
    v2 = version_data(project / "data" / "synthetic")
    assert v2.dvc_md5 != v1.dvc_md5
    again = version_data(project / "data" / "synthetic")
    assert again.dvc_md5 == v2.dvc_md5  # unchanged data, same version
    assert "data.dvc" not in dvc(project, "status")


def test_data_outside_the_tracked_folder_is_refused(project, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(VersioningError, match="outside the DVC-tracked folder"):
        version_data(outside)


def test_data_of_an_old_version_is_restored_byte_for_byte_after_two_changes(project):
    from llmrec.versioning import checkout_data

    folder = project / "data" / "batch"
    folder.mkdir(parents=True)
    original = {"news.tsv": b"N1\tsports\tfootball\tA title\t\t\t[]\t[]\n", "behaviors.tsv": b"1\tU1\t11/9/2019 1:00:00 AM\t\tN1-1\n"}
    for name, content in original.items():
        (folder / name).write_bytes(content)
    v1 = version_data(folder)
    (folder / "news.tsv").write_bytes(b"changed\n")
    v2 = version_data(folder)
    (folder / "extra.tsv").write_bytes(b"new file\n")
    (folder / "behaviors.tsv").unlink()
    v3 = version_data(folder)
    assert len({v1.dvc_md5, v2.dvc_md5, v3.dvc_md5}) == 3

    assert checkout_data(v1.dvc_file) == v1.dvc_md5
    assert sorted(p.name for p in folder.iterdir()) == sorted(original)
    for name, content in original.items():
        assert (folder / name).read_bytes() == content
    assert checkout_data(v3.dvc_file) == v3.dvc_md5  # and forward again
    assert (folder / "extra.tsv").read_bytes() == b"new file\n"
    assert not (folder / "behaviors.tsv").exists()
