import pytest
import torch

from effnet.spec import HeadSpec, NetSpec, StageSpec, StemSpec

# The slowest files (quick experiments end to end, torch.compile) are handed out first, one to each xdist worker
# (`make test` runs `--dist loadfile --no-loadscope-reorder`), so that no worker is left alone with one at the end.
SLOW_FILES = ("test_experiments_strategies.py", "test_experiments.py", "test_faults.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: other files keep their order


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Per-machine caches (the measured ceiling, engine choices) go to a directory of this test session, never into
    the user's own cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def tiny_spec(**overrides) -> NetSpec:
    """A 3-stage MBConv net small enough to train in seconds at 32 px."""
    base = dict(
        name="tiny",
        stem=StemSpec(channels=8),
        stages=(
            StageSpec("mbconv", 1, 3, 1, 8, expand_ratio=1, se_ratio=0.25),
            StageSpec("mbconv", 2, 3, 2, 16, expand_ratio=4, se_ratio=0.25),
            StageSpec("mbconv", 1, 5, 2, 24, expand_ratio=4, se_ratio=0.25),
        ),
        head=HeadSpec(channels=64),
        resolution=32,
        num_classes=10,
    )
    base.update(overrides)
    return NetSpec(**base)


@pytest.fixture
def tiny():
    return tiny_spec()
