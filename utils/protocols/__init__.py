"""Training protocols shared by entry scripts: the toolkit's and Rethinking's (main_al.py), CCAL's
(contrast_main.py, active_main.py) and LfOSA's (AL_center*.py)."""
