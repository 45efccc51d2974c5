//! Geometry on masks and fields: marching cubes, distance transforms, inflation (the negative
//! volume), connected components and surface metrics, all in millimetres.
