//! Nothing here: the recipe is tests/recipe.rs.
