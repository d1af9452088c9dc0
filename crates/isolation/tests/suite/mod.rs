mod cgroups;
