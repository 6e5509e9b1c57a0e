"""nnU-Net v2 as a baseline, used as a library and through its own commands (its code is not copied).

``dataset`` writes harmonized patients as an nnU-Net raw dataset, ``environment`` points nnU-Net at
folders under a results root for one call, ``trainers`` holds the budgeted trainer variants (with and
without gradual modality dropout) and ``predict`` returns the thrombus probability on the harmonized grid.
"""
