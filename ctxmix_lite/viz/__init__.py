"""What a learner sees: figures (:mod:`.plotting`) and ipywidgets 7/8 viewers (:mod:`.widgets`)."""
