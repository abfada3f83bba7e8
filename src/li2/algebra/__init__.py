"""Finite groups (by name, Cayley table or safe expression) and their representation theory:
character tables, Frobenius–Schur indicators, real isotypic projectors. No training."""
from .groups import Group, GroupError, direct_product, get_group
from .representations import (
    CharacterTable,
    IsotypicComponents,
    character_table,
    component_layout,
    conjugacy_classes,
    frobenius_schur_indicators,
    group_info,
    irrep_degrees,
    isotypic_components,
)
from .tables import check_group_table, expression_task, group_from_table, load_group_table

__all__ = ["Group", "GroupError", "direct_product", "get_group", "check_group_table", "expression_task",
           "group_from_table", "load_group_table",
           "CharacterTable", "IsotypicComponents", "character_table", "component_layout", "conjugacy_classes",
           "frobenius_schur_indicators", "group_info", "irrep_degrees", "isotypic_components"]
