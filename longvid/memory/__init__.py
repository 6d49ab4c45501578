"""Memory for long videos: a bank of keyframes, retrieval, and anti-drift. Pure numpy.

The bank lives in the run directory (one file per segment), so a resumed render
rebuilds it exactly; see `bank.py`. Nothing here imports torch.
"""

BANK_CAPACITY = 64  # keyframes the bank keeps in RAM (bank.py); here for longvid/identity.py
