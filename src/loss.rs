//! Losses: weighted cross-entropy, NLL on probabilities, soft Dice, the original project's hard
//! Dice with its hand-made gradient, and Dice + weight * CE.
