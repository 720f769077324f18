"""Libraries behind `lab detect` (the recipes in labcli/recipes/detect are Config + run + report):

vision (MNIST CNN, training, FGSM/PGD/CW attacks, model file), backdoor (BadNets and its detectors), privacy
(membership attacks, DP-SGD), voice / voice_fakes (audio features, detectors, synthetic fakes), image (patches,
decoder fakes, spectral features, detectors), deepfake_store (saved detectors, what `lab serve detector` scores
with), federated (Flower simulation: client splits, client rounds, strategies, attacks), explain (exact Shapley
values, deletion curves, LIME stability), inversion (Fredrikson-style model inversion, its priors and class-mean scoring),
sidechannel (early-exit network, its timed server process, the timing attack), extraction (the victim behind HTTP with
its defences, the query-budget attacker, the stolen copy), common (ROC metrics, plots, progress). Data sets live in labcli/data/<name>/.
"""
