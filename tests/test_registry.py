"""The Registry class and the built-in registries."""

from __future__ import annotations

import pytest

from selfmeta.data import SOURCES
from selfmeta.data.source import DataSource
from selfmeta.modalities import MODALITIES
from selfmeta.encoders import ENCODERS, Encoder
from selfmeta.errors import SelfmetaError
from selfmeta.methods import BUILT_BY_ENGINE, METHODS, Method
from selfmeta.options import declared_options
from selfmeta.registry import Registry


def test_register_get_names():
    reg: Registry = Registry("widget")

    @reg.register("zeta")
    class Zeta:
        pass

    def alpha():
        return 1

    assert reg.register("alpha")(alpha) is alpha  # the decorator returns the object unchanged
    assert reg.get("zeta") is Zeta and reg.get("alpha") is alpha
    assert reg.names() == ["alpha", "zeta"]  # sorted, whatever the registration order
    assert list(reg) == ["alpha", "zeta"]
    assert "zeta" in reg and "beta" not in reg


def test_duplicate_registration():
    reg: Registry = Registry("widget")
    reg.register("a")(object)
    with pytest.raises(RuntimeError, match="widget 'a' registered twice"):
        reg.register("a")(int)
    assert reg.get("a") is object  # the first one stays


def test_unknown_name_lists_valid_ones():
    reg: Registry = Registry("gadget")
    for name in ("b", "c", "a"):
        reg.register(name)(name)
    with pytest.raises(SelfmetaError, match="unknown gadget 'd'; valid: a, b, c"):
        reg.get("d")
    assert issubclass(SelfmetaError, ValueError)


def test_empty_registry_message():
    with pytest.raises(SelfmetaError, match="unknown thing 'x'"):
        Registry("thing").get("x")


def test_builtin_sources():
    assert SOURCES.names() == ["cifar", "csv", "digits", "idx", "imagefolder", "jsonl", "lines", "movielens", "omniglot",
                              "parquet", "tablefolder", "textfolder", "ts", "tsv", "ucr", "windows"]
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        assert issubclass(cls, DataSource) and cls.name == name and cls.description


def test_builtin_encoders():
    assert ENCODERS.names() == ["conv4", "fasttext", "fusion", "mlp", "resnet18", "resnet1d", "sasrec", "transformer",
                                "ts2vec"]
    assert all(issubclass(ENCODERS.get(n), Encoder) for n in ENCODERS.names())
    with pytest.raises(SelfmetaError, match="unknown encoder 'vit'; valid: conv4, fasttext, fusion, mlp, resnet18, resnet1d, sasrec, transformer, ts2vec"):
        ENCODERS.get("vit")


def test_builtin_methods():
    assert "simclr" in METHODS.names()
    simclr = METHODS.get("simclr")
    assert issubclass(simclr, Method) and simclr.description and simclr.paper
    options = declared_options(simclr, BUILT_BY_ENGINE)
    assert {n: d.default for n, d in options.items()} == {"temperature": 0.5, "proj_hidden": 512, "proj_dim": 128}
    assert options["temperature"].kind == "float" and options["proj_dim"].kind == "int"
    expected = ["barlow", "byol", "cl4srec", "coldstart", "contrastive", "crossmodal", "dec", "deepcluster", "duorec",
                "maskedcolumns", "moco", "reconstruction", "rotation", "sasrec", "sela", "simclr", "triplet", "ts2vec",
                "vicreg"]
    assert METHODS.names() == expected
    with pytest.raises(SelfmetaError, match="unknown method 'dino'; valid: barlow, byol, .*simclr"):
        METHODS.get("dino")


def test_builtin_modalities():
    assert MODALITIES.names() == ["image", "interactions", "record", "series", "table", "text"]


def test_class_names_sort_numbers_by_value():
    from selfmeta.data.dataset import labels_from_names

    y, classes = labels_from_names(["10", "2", "1", "2"])
    assert classes == ["1", "2", "10"]
    assert y.tolist() == [2, 1, 0, 1]
    _, classes = labels_from_names(["b", "10", "a", "9"])
    assert classes == ["9", "10", "a", "b"]
