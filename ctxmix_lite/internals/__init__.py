"""What a layer computes, read from a real model: the capture types (:mod:`.capture_types`), the
Transformer layer from its equations (:mod:`.layer`) and the full capture (:mod:`.capture`)."""
