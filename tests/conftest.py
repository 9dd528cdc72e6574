"""Suite-wide settings."""

import pytest
import torch

# The suite's models are tiny: with more than one thread, the thread pool's hand-offs cost more than
# the arithmetic, and on a shared 2-core machine a descheduled worker stalls every op.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fx(request):
    """The original-code fixture named by the test module's ``FIXTURE`` folder, loaded once per module
    (``sparc.testing.original_fixture``). Whether it is reproduced is checked for every folder by
    test_original_fixtures.py; the modules test what else the recorded tensors say."""
    from sparc.testing import original_fixture

    return original_fixture(request.module.FIXTURE)
