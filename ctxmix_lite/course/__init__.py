"""Running the course: where things live (:mod:`.paths`), the Colab set-up (:mod:`.colab`) and the
exercise framework with each notebook's checks and references (:mod:`.exercises`)."""
