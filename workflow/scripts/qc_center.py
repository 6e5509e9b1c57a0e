"""Rule qc_center: the center's QC table and its patients' montages."""
import shutil
from pathlib import Path

from thrombseg.preprocessing import PreprocessingError
from thrombseg.preprocessing.qc import write_center_qc
from thrombseg.smk import run_step


def step(sm):
    root = Path(sm.params.preproc_root)
    jsons = [root / s / f"{s}_preproc.json" for s in sm.params.subjects]
    write_center_qc(jsons, sm.output.tsv, center=sm.wildcards.center)
    out = Path(sm.output.montages)
    out.mkdir(parents=True, exist_ok=True)
    for s in sm.params.subjects:
        png = root / s / f"{s}_qc.png"
        if png.is_file():
            shutil.copy2(png, out / png.name)


run_step(snakemake, step, errors=(PreprocessingError,))  # noqa: F821
