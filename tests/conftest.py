"""Suite-wide settings."""

import torch

# The suite's models are tiny: with more than one thread, the thread pool's hand-offs cost more than
# the arithmetic, and on a shared 2-core machine a descheduled worker stalls every op.
torch.set_num_threads(1)
