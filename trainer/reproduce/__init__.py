"""``jicd reproduce``: plan (:mod:`.plan`), run (:mod:`.runner`), tabulate (:mod:`.tables`) the
paper's tables at tiny / cpu / paper scale; Slurm submission for the paper scale (:mod:`.slurm`)."""
