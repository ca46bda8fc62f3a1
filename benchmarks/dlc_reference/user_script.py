"""A DeepLabCut user's script: DeepLabCut's calls only, nothing posed-specific.

    python user_script.py PROJECT/config.yaml VIDEO_FOLDER OUT_FOLDER

benchmarks/dlc_dropin.py runs it unchanged against posed's compat layer (``deeplabcut`` is
posed.engines.compat there), on a shuffle DeepLabCut 3.0.2 trained.
"""

import sys

import deeplabcut

config, videos, out = sys.argv[1:4]

deeplabcut.evaluate_network(config, Shuffles=[1], plotting=False)
scorer = deeplabcut.analyze_videos(config, [videos], videotype=".mp4", shuffle=1,
                                   save_as_csv=True, destfolder=out, batchsize=4,
                                   allow_growth=True)
train_cfg, test_cfg, snapshots = deeplabcut.return_train_network_path(config, shuffle=1)
deeplabcut.export_model(config, shuffle=1, overwrite=True)
engine = deeplabcut.get_project_engine({"engine": "pytorch"})
print(f"SCORER={scorer}")
print(f"TRAIN_CONFIG={train_cfg}")
print(f"ENGINE={engine.value}")
